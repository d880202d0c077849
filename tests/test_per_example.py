"""Per-example metrics on synthetic model outputs whose answer is known."""

from __future__ import annotations

import math

import numpy as np
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


# -- brute-force references written from the definitions --------------------------------------

def test_gaussian_log_density_is_the_normal_log_pdf():
    from sparse_mu.metrics.per_example import _gaussian_logpdf

    x, mean, std = torch.tensor([0.3, -2.0, 5.0]), torch.tensor([0.0, 1.0, 4.0]), torch.tensor([0.5, 2.0, 0.1])
    want = torch.distributions.Normal(mean, std).log_prob(x)
    torch.testing.assert_close(_gaussian_logpdf(x, mean, std), want)


def _ulira_reference(u: torch.Tensor, r: torch.Tensor, min_std: float = 1e-3) -> dict[str, float]:
    """Leave the target model out of its own kind's fit; score = log N(x; unlearned fit) -
    log N(x; retrained fit) per example; "unlearned" when the score is above 0."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores, truth = [], []
    for kind, models in ((1, u), (0, r)):
        for j in range(len(models)):
            others_u = [u[i] for i in range(len(u)) if not (kind == 1 and i == j)]
            others_r = [r[i] for i in range(len(r)) if not (kind == 0 and i == j)]
            for e in range(u.shape[1]):
                fits = []
                for group in (others_u, others_r):
                    v = torch.tensor([float(m[e]) for m in group], dtype=torch.float64)
                    fits.append(torch.distributions.Normal(v.mean(), max(float(v.std()), min_std)))
                x = models[j][e].double()
                scores.append(float(fits[0].log_prob(x) - fits[1].log_prob(x)))
                truth.append(kind)
    s, y = np.array(scores), np.array(truth)
    fpr, tpr, _ = roc_curve(y, s)
    acc = 0.5 * ((s[y == 1] > 0).mean() + (s[y == 0] <= 0).mean())
    return {"ulira_acc": 100 * acc, "ulira_auc": 100 * roc_auc_score(y, s),
            "ulira_tpr_at_1fpr": 100 * float(np.interp(0.01, fpr, tpr))}


@pytest.mark.parametrize("models", [3, 5])
def test_ulira_matches_a_literal_leave_one_out_reference(models):
    u, r = draws(models, 40, shift=0.7, seed=7), draws(models, 40, seed=8)
    r[:, :5] = r[0, :5]  # a few examples whose retrained values agree: the std floor min_std
    got, want = ulira(u, r), _ulira_reference(u, r)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert 50 < want["ulira_acc"] < 100 and 0 < want["ulira_tpr_at_1fpr"] < 100


def _epsilon_reference(u: list[float], r: list[float], delta: float) -> float:
    best = 0.0
    for t in u + r:
        fpr = sum(v >= t for v in r) / len(r)  # "unlearned if >= t", wrong on retrained models
        fnr = sum(v < t for v in u) / len(u)
        for a, b in ((fpr, fnr), (1 - fpr, 1 - fnr)):  # and the attack "unlearned if < t"
            for num, den in ((1 - delta - a, b), (1 - delta - b, a)):
                if num > 0 and den > 0:
                    best = max(best, math.log(num / den))
    return best


@pytest.mark.parametrize("delta", [0.01, 0.2])
def test_epsilons_and_forgetting_quality_match_a_brute_force_over_thresholds(delta):
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 4, (6, 30), generator=g).double()  # few values: many ties at thresholds
    r = torch.randint(1, 5, (5, 30), generator=g).double()
    want = [_epsilon_reference(u[:, e].tolist(), r[:, e].tolist(), delta) for e in range(30)]
    got = example_epsilons(u, r, delta=delta)
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx(want, abs=1e-12)
    assert len(set(want)) > 3
    quality = sum(2 / 2 ** (1 + math.floor(e / 0.3)) for e in want) / 30
    assert forgetting_quality(u, r, delta=delta, bin_width=0.3) == pytest.approx(quality)


def test_klom_matches_per_example_histograms():
    g = torch.Generator().manual_seed(1)
    scale = torch.tensor([0.01, 0.3, 1.0, 20.0], dtype=torch.float64)  # ranges below and above 1
    u = torch.randn(12, 4, generator=g, dtype=torch.float64) * scale + 0.5 * scale
    r = torch.randn(9, 4, generator=g, dtype=torch.float64) * scale
    want = []
    for e in range(4):
        lo, hi = min(u[:, e].min(), r[:, e].min()).item(), max(u[:, e].max(), r[:, e].max()).item()
        p = np.histogram(u[:, e].numpy(), bins=5, range=(lo, hi))[0] + 0.5
        q = np.histogram(r[:, e].numpy(), bins=5, range=(lo, hi))[0] + 0.5
        p, q = p / p.sum(), q / q.sum()
        want.append(float((p * np.log(p / q)).sum()))
    assert klom(u, r, bins=5, eps=0.5).tolist() == pytest.approx(want, rel=1e-9)


def test_distances_on_rows_of_unequal_rows_and_weights():
    p = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    q = torch.tensor([[0.1, 0.9], [0.6, 0.4], [0.5, 0.5]])

    def kl(a, b):
        return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)

    want = sum(0.5 * kl(a, [(x + y) / 2 for x, y in zip(a, b, strict=True)])
               + 0.5 * kl(b, [(x + y) / 2 for x, y in zip(a, b, strict=True)])
               for a, b in zip(p.tolist(), q.tolist(), strict=True)) / 3
    assert js_divergence(p, q) == pytest.approx(want)
    assert activation_distance(p, q) == pytest.approx(float((p - q).norm(dim=1).mean()))
    a = {"w": torch.tensor([1.0, -2.0]), "b": torch.tensor([0.5])}
    b = {"w": torch.tensor([3.0, 1.0]), "b": torch.tensor([0.0])}
    assert weight_distance(a, b) == pytest.approx(math.sqrt(4 + 9 + 0.25))
