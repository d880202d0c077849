"""SNIP and GraSP: their scores match the definitions computed independently, on tiny nets."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu import pipeline
from sparse_mu.errors import ConfigError
from sparse_mu.pruning import SNIP, BaseWeights, GraSP
from sparse_mu.pruning.at_init import balanced_sample, grasp_scores, snip_scores


def tiny() -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    return net, [(x[:7], y[:7]), (x[7:], y[7:])]


def test_snip_is_the_magnitude_of_gradient_times_weight_of_the_summed_loss():
    net, batches = tiny()
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    # by hand for the first layer: dL/dW1 = sum_i (delta_i) x_i^T, delta back-propagated through tanh
    w1, w2, w3 = net[0].weight, net[2].weight, net[4].weight
    with torch.no_grad():
        h1 = torch.tanh(x @ w1.T + net[0].bias)
        h2 = torch.tanh(h1 @ w2.T + net[2].bias)
        p = F.softmax(h2 @ w3.T + net[4].bias, -1)
        d3 = p - F.one_hot(y, 3)
        d2 = (d3 @ w3) * (1 - h2 ** 2)
        d1 = (d2 @ w2) * (1 - h1 ** 2)
        want = {"0.weight": (d1.T @ x * w1).abs(), "2.weight": (d2.T @ h1 * w2).abs()}
    got = snip_scores(net, batches)
    assert set(got) == set(want)  # the head is not prunable
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6)


def hessian_gradient(net: nn.Module, batches: list, t: float) -> dict[str, torch.Tensor]:
    """H g for the two prunable weights of `tiny`, g the gradient of the cross-entropy of the
    logits / t summed over the batches: central differences of g along g (use float64)."""
    params = {"0.weight": net[0].weight, "2.weight": net[2].weight}

    def grad_at(shift: list[torch.Tensor]) -> list[torch.Tensor]:
        saved = [p.detach().clone() for p in params.values()]
        with torch.no_grad():
            for p, s in zip(params.values(), shift, strict=True):
                p.add_(s)
        total = [torch.zeros_like(p) for p in params.values()]
        for x, y in batches:
            for acc, g in zip(total, torch.autograd.grad(F.cross_entropy(net(x) / t, y), list(params.values())),
                              strict=True):
                acc += g
        with torch.no_grad():
            for p, s in zip(params.values(), saved, strict=True):
                p.copy_(s)
        return total

    g = grad_at([torch.zeros_like(p) for p in params.values()])
    eps = 1e-3 / max(float(v.abs().max()) for v in g)
    plus, minus = grad_at([eps * v for v in g]), grad_at([-eps * v for v in g])
    return {k: (a - b) / (2 * eps) for k, a, b in zip(params, plus, minus, strict=True)}


def test_grasp_is_minus_weight_times_hessian_gradient_product():
    net, batches = tiny()
    net.double()
    batches = [(x.double(), y) for x, y in batches]
    t = 200.0
    hg = hessian_gradient(net, batches, t)
    got = grasp_scores(net, batches, t)
    for k, h in hg.items():
        p = dict(net.named_parameters())[k]
        torch.testing.assert_close(got[k], -(p.detach() * h), rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("t", [5.0, 0.5])
def test_the_grasp_pruner_scores_at_its_own_temperature(t):
    """GraSP(temperature=t) hands Mask the scores w * (H g) of the logits / t (the weights of
    highest -w * (H g) removed): the score of the temperature set, not of the default 200."""
    net, batches = tiny()
    net.double()
    batches = [(x.double(), y) for x, y in batches]
    hg, hg_200 = hessian_gradient(net, batches, t), hessian_gradient(net, batches, 200.0)
    got = GraSP(sparsity=0.5, temperature=t).scores(net, batches)
    assert set(got) == set(hg)
    for k, h in hg.items():
        w = dict(net.named_parameters())[k].detach()
        torch.testing.assert_close(got[k], w * h, rtol=1e-4, atol=1e-12)
        assert not torch.allclose(w * h, w * hg_200[k], rtol=1e-2, atol=1e-12)  # the temperature matters


def test_grasp_removes_the_highest_scores_and_snip_keeps_the_highest():
    net, batches = tiny()
    data = [(x, y) for x, y in batches]
    base = {k: v.clone() for k, v in net.state_dict().items()}
    seen = {}

    def train(start, mask):
        seen["mask"], seen["start"] = mask, start
        return start

    class Data:
        y = torch.cat([b[1] for b in data])

        def loader(self, idx, batch_size, train):
            seen["idx"], seen["train"] = idx, train
            x = torch.cat([b[0] for b in data])
            return [(x[idx], self.y[idx], idx)]

    batch = [(torch.cat([b[0] for b in data]), Data.y)]
    assert not torch.equal(grasp_scores(net, batch, 5.0)["0.weight"].sign(), grasp_scores(net, batch, 200.0)["0.weight"].sign())
    for cls, sign, kw in ((SNIP, 1, {}), (GraSP, -1, {"temperature": 5.0})):
        pruner = cls(sparsity=0.5, samples_per_class=100, **kw)
        init = {k: v + 1 for k, v in base.items()}  # the initial weights, not the net's current ones
        pruner.prune(net, BaseWeights(init, None, None), train, data=(Data(), torch.arange(12)))
        assert seen["start"] is init and seen["train"] is False and len(seen["idx"]) == 12
        net.load_state_dict(init)
        scores = snip_scores(net, batch) if cls is SNIP else grasp_scores(net, batch, 5.0)
        flat_s = torch.cat([sign * scores[k].flatten() for k in scores])
        flat_m = torch.cat([seen["mask"].tensors[k].flatten() for k in scores])
        assert flat_m.sum() == flat_m.numel() // 2
        assert flat_s[flat_m].min() >= flat_s[~flat_m].max(), cls.__name__


def test_balanced_sample_takes_per_class_seeded():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 6)
    among = torch.arange(1, 19)
    b = balanced_sample(labels, among, 4, seed=0)
    assert [int((labels[b] == c).sum()) for c in range(3)] == [4, 3, 4]
    assert len(set(b.tolist())) == 11 and set(b.tolist()) <= set(among.tolist())
    labels = torch.tensor([0] * 10 + [1] * 3)
    a = balanced_sample(labels, torch.arange(13), 4, seed=1)
    assert (labels[a] == 0).sum() == 4 and (labels[a] == 1).sum() == 3
    assert torch.equal(a, balanced_sample(labels, torch.arange(13), 4, seed=1))
    assert not torch.equal(a, balanced_sample(labels, torch.arange(13), 4, seed=2))


@pytest.mark.parametrize("kwargs, key", [({"samples_per_class": 0}, "pruner.samples_per_class"),
                                         ({"sparsity": 1.0}, "pruner.sparsity")])
def test_bad_settings(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        SNIP(**kwargs)
    with pytest.raises(ConfigError, match="pruner.temperature"):
        GraSP(temperature=0.0)
    assert SNIP(samples_per_class=1).samples_per_class == 1 and GraSP(temperature=0.5).temperature == 0.5


def test_snip_scores_the_seeded_samples_per_class():
    net, batches = tiny()
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    seen = {}

    class Data:
        def __init__(self):
            self.y = y

        def loader(self, idx, batch_size, train):
            seen["idx"] = idx
            return [(x[idx], y[idx], idx)]

    base = {k: v.clone() for k, v in net.state_dict().items()}
    SNIP(sparsity=0.5, samples_per_class=2, seed=3).prune(net, BaseWeights(base, None, None), lambda s, m: s,
                                                           data=(Data(), torch.arange(12)))
    assert torch.equal(seen["idx"], balanced_sample(y, torch.arange(12), 2, seed=3))
    assert len(seen["idx"]) == 5  # 2 of classes 1 and 2, the only sample of class 0


@pytest.mark.parametrize("name", ["snip", "grasp"])
def test_end_to_end_without_a_dense_model(name, tiny_cfg, tmp_path):
    cfg = tiny_cfg(f"pruner={name}", "pruner.sparsity=0.8", "arch.width=8", "trainer.limit_train_batches=2",
                   "reference.epochs=2", "unlearner.epochs=1")
    m = pipeline.run(cfg, tmp_path / "run")
    assert m["sparsity"] == pytest.approx(80.0, abs=0.1)
    base = json.loads(next((tmp_path / "cache" / "base").glob("*/meta.json")).read_text())
    assert base["trained"] is False
