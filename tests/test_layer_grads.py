"""The fast FF and IU paths give the old (vmapped per-sample gradient) results to 1e-5.

`layer_grads.grad_square_sums` against per-sample gradients from vmap; FF's Fisher statistic
and update, and IU's update, against the old formulas computed directly here; masks kept.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from sparse_mu.data import ClassForget, Digits, prepare
from sparse_mu.models import LeNet, SmallCNN
from sparse_mu.models.resnet_s import ResNetS
from sparse_mu.pruning import BaseWeights, Mask, classifier_head
from sparse_mu.pruning.pruners import magnitude_scores
from sparse_mu.unlearn import FisherForgetting, InfluenceUnlearning, UnlearnTask, iu, layer_grads
from sparse_mu.unlearn.layer_grads import grad_dots, grad_square_sums
from sparse_mu.unlearn.per_sample import (
    cross_entropy,
    flatten,
    keep_masks,
    log_likelihood,
    per_sample_grads,
    summed_grad,
)

EPS = 1e-8


class Mixed(nn.Module):
    """Conv with bias, stride and dilation; BatchNorm2d/1d; a Linear on a sequence; a head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=2, dilation=2, bias=True)
        self.bn = nn.BatchNorm2d(6)
        self.seq = nn.Linear(6, 5)
        self.bn1d = nn.BatchNorm1d(5)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))  # [B, 6, H, W]
        h = self.seq(h.flatten(2).transpose(1, 2)).mean(1)  # Linear on [B, H*W, 6]
        return self.fc(torch.relu(self.bn1d(h)))


def settled(net: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    net.train()
    with torch.no_grad():
        net(torch.randn(32, *shape) * 2 + 1)  # BatchNorm running statistics away from (0, 1)
    return net.eval()


NETS = {
    "small_cnn": (lambda: SmallCNN(10, 1, 8, width=8), (1, 8, 8)),
    "lenet": (lambda: LeNet(10, 3, 16, width=4, hidden=16), (3, 16, 16)),
    "resnet20s": (lambda: ResNetS(10, 3, 8, blocks_per_stage=1), (3, 8, 8)),
    "mixed": (Mixed, (3, 9, 9)),
}


@pytest.mark.parametrize("name", list(NETS))
def test_square_sums_equal_the_vmapped_per_sample_gradients(name):
    torch.manual_seed(0)
    build, shape = NETS[name]
    net = settled(build(), shape)
    x, y = torch.randn(13, *shape), torch.randint(0, 4, (13,))
    want = next(per_sample_grads(net, x, y, chunk_size=len(x), loss=log_likelihood))
    for chunk in (5, 13):
        squares, sums = grad_square_sums(net, x, y, chunk_size=chunk)
        assert list(squares) == list(want) == list(sums)  # every trainable parameter, in order
        for k, g in want.items():
            torch.testing.assert_close(squares[k], g.pow(2).sum(0), rtol=1e-5, atol=1e-12, msg=k)
            torch.testing.assert_close(sums[k], g.sum(0), rtol=1e-5, atol=1e-6, msg=k)
    assert all(p.grad is None for p in net.parameters())


NO_CLOSED_FORM = (lambda: nn.Sequential(nn.Flatten(), nn.LayerNorm(48), nn.Linear(48, 4)), (3, 4, 4))


@pytest.mark.parametrize("name", ["small_cnn", "lenet", "resnet20s", "mixed", "layernorm (jvp)"])
def test_gradient_dots_equal_the_per_sample_gradients_dotted(name):
    torch.manual_seed(1)
    build, shape = NETS.get(name, NO_CLOSED_FORM)
    net = settled(build(), shape)
    x, y = torch.randn(9, *shape), torch.randint(0, 4, (9,))
    rows = flatten(next(per_sample_grads(net, x, y, chunk_size=len(x), loss=cross_entropy)))
    u = [{k: torch.randn_like(p) for k, p in net.named_parameters()} for _ in range(2)]
    want = torch.stack([flatten({k: t[None] for k, t in d.items()})[0] for d in u]) @ rows.T
    torch.testing.assert_close(grad_dots(net, x, y, u, chunk_size=4), want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


class Forced(dict):
    """`layer_grads.conv_routes` that always answers one route."""

    def __init__(self, route: str):
        super().__init__()
        self.route = route

    def get(self, key, default=None):
        return self.route


@pytest.mark.parametrize("route", list(layer_grads.CONV_ROUTES))
@pytest.mark.parametrize("channels_last", [False, True])
def test_every_conv_route_gives_the_vmapped_sums_and_dots(route, channels_last, monkeypatch):
    """Each way of forming per-sample conv weight gradients (the timed choice picks one per layer
    shape) gives FF's sums and IU's dot products, on the strided/dilated conv and SmallCNN, in
    both memory layouts."""
    monkeypatch.setattr(layer_grads, "conv_routes", Forced(route))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for name in ("mixed", "small_cnn"):
        torch.manual_seed(2)
        build, shape = NETS[name]
        net = settled(build(), shape).to(memory_format=layout)
        x = torch.randn(7, *shape).contiguous(memory_format=layout)
        y = torch.randint(0, 4, (7,))
        want = next(per_sample_grads(net, x, y, chunk_size=len(x), loss=log_likelihood))
        squares, sums = grad_square_sums(net, x, y, chunk_size=3)
        for k, g in want.items():
            torch.testing.assert_close(squares[k], g.pow(2).sum(0), rtol=1e-5, atol=1e-12, msg=k)
            torch.testing.assert_close(sums[k], g.sum(0), rtol=1e-5, atol=1e-6, msg=k)
        u = [{k: torch.randn_like(p) for k, p in net.named_parameters()} for _ in range(2)]
        dots = -torch.stack([flatten({k: t[None] for k, t in d.items()})[0] for d in u]) @ flatten(want).T
        torch.testing.assert_close(grad_dots(net, x, y, u, chunk_size=3), dots, rtol=1e-4,
                                   atol=1e-5 * dots.abs().max().item())


def test_the_conv_route_is_timed_once_per_layer_shape(monkeypatch):
    monkeypatch.setattr(layer_grads, "conv_routes", {})
    build, shape = NETS["small_cnn"]
    net = settled(build(), shape)
    x, y = torch.randn(6, *shape), torch.randint(0, 4, (6,))
    grad_square_sums(net, x, y, chunk_size=3)
    assert len(layer_grads.conv_routes) == 3  # three conv layers, one chunk shape
    assert set(layer_grads.conv_routes.values()) <= set(layer_grads.CONV_ROUTES)
    grad_square_sums(net, x, y, chunk_size=3)
    assert len(layer_grads.conv_routes) == 3


def test_nets_without_a_closed_form_get_none():
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    norm = nn.Sequential(nn.Flatten(), nn.LayerNorm(192), nn.Linear(192, 4)).eval()
    assert grad_square_sums(norm, x, y, chunk_size=4) is None
    training = nn.Sequential(nn.Flatten(), nn.Linear(192, 4)).train()
    assert grad_square_sums(training, x, y, chunk_size=4) is None
    lin = nn.Linear(4, 4)
    twice = nn.Sequential(nn.Flatten(), nn.Linear(192, 4), lin, nn.ReLU(), lin).eval()
    assert grad_square_sums(twice, x, y, chunk_size=4) is None


# -- the methods on digits, against the old formulas -------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return prepare(Digits())


def task_for(data, net, sparsity=0.8) -> UnlearnTask:
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    mask = Mask.from_scores(magnitude_scores(net), sparsity)
    mask.apply_(net)
    return UnlearnTask(data, ClassForget(0).select(data), mask, BaseWeights(state, state, state))


def trained_net() -> nn.Module:
    torch.manual_seed(0)
    return settled(SmallCNN(10, 1, 8, width=8), (1, 8, 8))


def run(module) -> None:
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, accelerator="cpu").fit(module)


def test_ff_statistic_and_update_equal_the_old_per_sample_formula(digits):
    net = trained_net()
    task = task_for(digits, net)
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    # the old statistic: vmapped per-sample gradients, masked, (g + 1e-8)^2 summed
    keep = keep_masks(net, task.mask)
    x, y, _ = next(iter(digits.loader(task.forget.retain, batch_size=len(task.forget.retain), train=False)))
    old: dict[str, torch.Tensor] = {}
    for grads in per_sample_grads(net, x, y, chunk_size=97, loss=log_likelihood, keep=keep):
        for k, g in grads.items():
            old[k] = old.get(k, 0) + (g + EPS).pow(2).sum(0)
    module = FisherForgetting(net, task, alpha=1e-9, batch_size=256, seed=3)
    run(module)
    assert module.count == module.per_sample_grads == len(x)
    gen = torch.Generator().manual_seed(3)
    for k, p in net.named_parameters():
        torch.testing.assert_close(module.stats[k], old[k], rtol=1e-5, atol=1e-20, msg=k)
        std = (1e-9 / (old[k] / len(x))).sqrt().clamp(max=1e-3) * (10 if k == f"{classifier_head(net)}.bias" else 1)
        want = before[k] + std * torch.randn(p.shape, generator=gen)
        want = want * keep[k] if k in keep else want
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-7, msg=k)
        if k in keep:
            assert (p[keep[k] == 0] == 0).all()


def old_iu_step(net, data, task, picked, alpha) -> torch.Tensor:
    """The old IU update: summed gradients, then the WoodFisher recursion on whole vectors."""
    keep = keep_masks(net, task.mask)

    def summed(idx):
        x, y, _ = next(iter(data.loader(idx, batch_size=len(idx), train=False)))
        return flatten({k: g[None] for k, g in summed_grad(net, x, y, keep).items()})[0]

    n_f, n_r = len(task.forget.forget), len(task.forget.retain)
    v = summed(task.forget.forget) / (n_f + n_r) - n_f / ((n_f + n_r) * n_r) * summed(task.forget.retain)
    x, y, _ = next(iter(data.loader(picked, batch_size=len(picked), train=False)))
    rows = flatten(next(per_sample_grads(net, x, y, chunk_size=len(x), keep=keep)))
    k, o, m = v.clone(), rows[0].clone(), len(rows)
    for g in rows[1:]:
        t = o @ g
        k -= (k @ g) / (m + t) * o
        o -= t / (m + t) * o
    return alpha * k


@pytest.mark.parametrize("fallback", [False, True])
def test_iu_update_equals_the_old_vector_recursion(digits, fallback, monkeypatch):
    if fallback:  # a net without forward-mode rules: per-sample gradients by vmap instead
        def no_jvp(*args, **kwargs):
            raise NotImplementedError
        monkeypatch.setattr(iu, "grad_dots", no_jvp)
    net = trained_net()
    task = task_for(digits, net)
    module = InfluenceUnlearning(net, task, alpha=5.0, samples=300, batch_size=128, seed=2)
    want = old_iu_step(net.eval(), digits, task, module.recursion_samples(), 5.0)
    before = torch.cat([p.detach().flatten() for p in net.parameters()])
    run(module)
    got = torch.cat([p.detach().flatten() for p in net.parameters()]) - before
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    assert module.per_sample_grads == 300
    for k, m in task.mask.tensors.items():
        assert (dict(net.named_parameters())[k][~m] == 0).all()
