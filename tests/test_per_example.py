"""Per-example metrics on synthetic model outputs whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_mu.metrics.per_example import (
    activation_distance,
    challenge_score,
    example_epsilons,
    forgetting_quality,
    js_divergence,
    klom,
    margins,
    scaled_confidence,
    ulira,
    weight_distance,
)


def draws(models: int, examples: int, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Scaled confidences: per example a mean of its own, model-to-model noise of std 1."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.linspace(-3, 3, examples, dtype=torch.float64)
    return centre + shift + torch.randn(models, examples, generator=g, dtype=torch.float64)


def test_scaled_confidence_and_margin_from_their_definitions():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 1.5, 1.0]]])  # 1 model, 2 examples
    labels = torch.tensor([0, 2])
    p = logits.softmax(-1)[0]
    want = torch.stack([torch.log(p[0, 0] / (1 - p[0, 0])), torch.log(p[1, 2] / (1 - p[1, 2]))])
    torch.testing.assert_close(scaled_confidence(logits, labels)[0], want.double())
    torch.testing.assert_close(margins(logits, labels)[0], torch.tensor([2.0, -0.5], dtype=torch.float64))


def test_ulira_is_at_chance_for_identical_and_perfect_for_separated_distributions():
    same = ulira(draws(16, 200, seed=1), draws(16, 200, seed=2))
    assert 40 < same["ulira_acc"] < 60 and 40 < same["ulira_auc"] < 60
    apart = ulira(draws(16, 200, shift=4.0, seed=1), draws(16, 200, seed=2))
    assert apart["ulira_acc"] > 95 and apart["ulira_auc"] > 99 and apart["ulira_tpr_at_1fpr"] > 80
    with pytest.raises(ValueError, match="at least 3"):
        ulira(draws(2, 5), draws(8, 5))


def test_epsilon_by_hand_on_one_example():
    # 4 unlearned models all above 4 retrained ones. At t = 1 the attack "unlearned if >= t" has
    # FPR = FNR = 0 (both terms undefined, left out); at t = 2, FNR = 1/4 and FPR = 0, so the largest
    # defined term is log((1 - 0.01 - 0) / (1/4)) (t = -1 gives the same through the other term)
    u = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    r = torch.tensor([[-4.0], [-3.0], [-2.0], [-1.0]])
    eps = example_epsilons(u, r, delta=0.01)
    assert eps.item() == pytest.approx(math.log(0.99 / 0.25))
    same = example_epsilons(torch.zeros(4, 1), torch.zeros(4, 1))
    assert same.item() == pytest.approx(0.0)


def test_forgetting_quality_bins_and_final_score():
    # the max over thresholds of noisy rate estimates biases epsilon up: identical distributions
    # score ~0.29 with 32 (and with 128) models per side, not 1; far apart ones ~0.016
    same = forgetting_quality(draws(32, 100, seed=3), draws(32, 100, seed=4))
    apart = forgetting_quality(draws(32, 100, shift=6.0, seed=3), draws(32, 100, seed=4))
    assert same > 0.2 and apart < 0.05 and same > 10 * apart
    # epsilon 0 scores 1 (bin 1), epsilon 0.6 scores 1/2 (bin 2)
    u = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    eps = example_epsilons(u, -u)
    assert forgetting_quality(u, -u) == pytest.approx(2 / 2 ** (1 + math.floor(eps.item() / 0.5)))
    assert challenge_score(0.5, 90, 100, 80, 100) == pytest.approx(0.5 * 0.9 * 0.8)


def test_klom_is_near_zero_for_identical_and_large_for_shifted_margins():
    same = klom(draws(64, 50, seed=5), draws(64, 50, seed=6))
    apart = klom(draws(64, 50, shift=5.0, seed=5), draws(64, 50, seed=6))
    assert same.mean() < 0.3 and apart.mean() > 2.0
    assert torch.allclose(klom(draws(8, 3, seed=1), draws(8, 3, seed=1)), torch.zeros(3, dtype=torch.float64))


def test_distances():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert js_divergence(p, q) == pytest.approx(0.5 * math.log(2))  # log 2 for the first row, 0 for the second
    assert js_divergence(p, p) == pytest.approx(0.0)
    assert activation_distance(p, q) == pytest.approx(math.sqrt(2) / 2)
    a = {"w": torch.ones(2, 2), "steps": torch.tensor(3)}
    b = {"w": torch.zeros(2, 2), "steps": torch.tensor(5)}
    assert weight_distance(a, b) == pytest.approx(2.0)
