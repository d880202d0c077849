"""SFR-on: the exact steps against a plain-autograd reference, the adaptive weights and the
saliency mask in closed form, the direction of a run, and masks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sparse_mu.errors import ConfigError
from sparse_mu.pruning import BaseWeights, Mask
from sparse_mu.pruning.pruners import magnitude_scores
from sparse_mu.unlearn import SFRon, UnlearnTask
from sparse_mu.unlearn.sfr_on import adaptive_weights
from tests.tiny import (
    PLAIN,
    accuracy,
    assert_same_weights,
    batch,
    ce,
    fit,
    mlp,
)


def task(data, fs, net, mask=None):
    state = {k: v.clone() for k, v in net.state_dict().items()}
    return UnlearnTask(data, fs, mask, BaseWeights(state, state, state))


def test_adaptive_weights_closed_form():
    w = adaptive_weights(torch.tensor([1.0, 4.0, 16.0]), 0.5)  # 1/sqrt(l) = 1, 1/2, 1/4
    torch.testing.assert_close(w, torch.tensor([4.0, 2.0, 1.0]) / 7)
    torch.testing.assert_close(adaptive_weights(torch.tensor([1.0, 9.0]), 0.0), torch.tensor([0.5, 0.5]))


def _grads(net, loss):
    return torch.autograd.grad(loss, list(net.parameters()))


@pytest.mark.parametrize("adaptive, max_norm", [(True, 0.5), (False, 0.5), (True, None)])
def test_steps_equal_a_plain_autograd_reference(data, fs, adaptive, max_norm):
    """Full batches, forget_freq 1, 2 epochs: forget, retain, forget, retain; cosine alpha over
    the 4 steps (25, -, 12.5, -); clipping active at 0.5 (it hides alpha: hence the unclipped
    case, at a smaller alpha); the mask from the squared mean gradients."""
    net, lr, lambd, th = mlp(), 0.1, 0.5, 1.0
    alpha0 = 25.0 if max_norm else 0.5
    xf, yf = batch(data, fs.forget)
    xr, yr = batch(data, fs.retain)
    ref = copy.deepcopy(net)
    gf = _grads(ref, F.cross_entropy(ref(xf), yf))
    gr = _grads(ref, F.cross_entropy(ref(xr), yr))
    mask = [((a * a + 1e-15) / (b * b + 1e-15) >= th).float() for a, b in zip(gf, gr, strict=True)]
    assert 0 < sum(m.sum() for m in mask) < sum(m.numel() for m in mask)
    for step in range(4):
        if step % 2 == 0:
            alpha = alpha0 * (1 + math.cos(math.pi * step / 4)) / 2
            losses = F.cross_entropy(ref(xf), yf, reduction="none")
            if adaptive:
                c = 1 / losses.detach() ** lambd
                loss = -alpha * (c * losses).sum() / c.sum()
            else:
                loss = -alpha * losses.mean()
            g = [gi * m for gi, m in zip(_grads(ref, loss), mask, strict=True)]
            norm = float(torch.sqrt(sum((gi * gi).sum() for gi in g)))
            if max_norm is not None:
                assert norm > max_norm  # the clipping is exercised
                g = [gi * min(1.0, max_norm / (norm + 1e-6)) for gi in g]
        else:
            g = _grads(ref, F.cross_entropy(ref(xr), yr))
        with torch.no_grad():
            for p, gi in zip(ref.parameters(), g, strict=True):
                p -= lr * gi
    module = SFRon(net, task(data, fs, net), epochs=2, **{**PLAIN, "lr": lr}, forget_alpha=alpha0, forget_freq=1,
                   lambd=lambd, adaptive=adaptive, threshold=th, max_norm=max_norm)
    fit(module)
    assert_same_weights(net, ref, atol=1e-5)


def test_forget_freq_interleaves_one_forget_batch_per_freq_retain_batches(data, fs):
    net = mlp()
    module = SFRon(net, task(data, fs, net), epochs=1, batch_size=16, lr=0.01, forget_freq=3)
    kinds = [k for k, _ in module.train_dataloader()]
    retain = math.ceil(len(fs.retain) / 16)
    assert kinds.count("retain") == retain and kinds.count("forget") == math.ceil(retain / 3)
    assert kinds[:5] == ["forget", "retain", "retain", "retain", "forget"]
    assert len(module.train_dataloader()) == len(kinds)


def test_raises_the_forget_loss_and_keeps_the_retain_accuracy(data, fs, memorised):
    """Against the same run with forget_alpha 0 (retain steps only: it lowers the forget loss
    of a memorised model too). A random D_f of digits generalises, so some RA is lost."""
    net, ft = copy.deepcopy(memorised), copy.deepcopy(memorised)
    settings = {"epochs": 5, "lr": 0.05, "batch_size": 16, "forget_freq": 1, "threshold": 0.5}
    fit(SFRon(net, task(data, fs, net), forget_alpha=25.0, **settings))
    fit(SFRon(ft, task(data, fs, ft), forget_alpha=0.0, **settings))
    assert ce(net, data, fs.forget) > 3 * max(ce(memorised, data, fs.forget), ce(ft, data, fs.forget))
    assert accuracy(net, data, fs.forget) < accuracy(ft, data, fs.forget) - 10
    assert accuracy(net, data, fs.retain) >= 88


def test_pruned_weights_stay_zero_and_are_never_salient(data, fs, memorised):
    net = copy.deepcopy(memorised)
    mask = Mask.from_scores(magnitude_scores(net), 0.7)
    mask.apply_(net)
    module = SFRon(net, task(data, fs, net, mask), epochs=2, batch_size=32, lr=0.05, weight_decay=0.05,
                   forget_freq=1)
    fit(module, mask=mask)
    for name, m in mask.tensors.items():
        w = dict(net.named_parameters())[name]
        assert torch.all(w[m == 0] == 0), name
        assert torch.all(module.saliency[name][m == 0] == 0), name


@pytest.mark.parametrize("kwargs, key", [
    ({"forget_alpha": -1}, "unlearner.forget_alpha"), ({"forget_freq": 0}, "unlearner.forget_freq"),
    ({"lambd": -0.5}, "unlearner.lambd"), ({"threshold": 0}, "unlearner.threshold"),
    ({"max_norm": 0}, "unlearner.max_norm"), ({"alpha_schedule": "step"}, "unlearner.alpha_schedule"),
    ({"forget_batch_size": 0}, "unlearner.forget_batch_size")])
def test_bad_settings_fail_with_one_line(data, fs, kwargs, key):
    net = mlp()
    with pytest.raises(ConfigError, match=key) as e:
        SFRon(net, task(data, fs, net), epochs=1, batch_size=16, lr=0.01, **kwargs)
    assert "\n" not in str(e.value)
