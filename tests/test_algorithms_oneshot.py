"""FF, ff_batch and IU by their mathematical contract: the update each applies to a tiny MLP,
against a direct, slow reference (a Python loop over samples with plain autograd) written from
ALGORITHMS.md section 4, never from the implementation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sparse_mu.pruning import BaseWeights, Mask
from sparse_mu.unlearn import (
    FisherForgetting,
    FisherForgettingBatch,
    InfluenceUnlearning,
    UnlearnTask,
)
from tests.tiny import batch, ff_batch_statistic, fit, forget_set, mlp, random_forget, trained

HEAD = ("3.weight", "3.bias")  # the classifier of tests.tiny.mlp


@pytest.fixture(scope="module")
def model(data):
    return trained(data, data.train, mlp(), steps=30)


def task(data, fs, net):
    state = {k: v.clone() for k, v in net.state_dict().items()}
    return UnlearnTask(data, fs, None, BaseWeights(state, state, state))


def sample_grads(net, x, y, sign=1.0):
    """Per-sample gradients of sign * CE, one autograd call per sample: {name: [n, *shape]}."""
    rows = []
    for xi, yi in zip(x, y, strict=True):
        loss = sign * F.cross_entropy(net(xi[None]), yi[None])
        rows.append(torch.autograd.grad(loss, list(net.parameters())))
    return {k: torch.stack([r[i] for r in rows]) for i, (k, _) in enumerate(net.named_parameters())}


def deltas(net, before):
    return {k: p.detach() - before[k] for k, p in net.named_parameters()}


def z_std(z: torch.Tensor) -> float:
    return float(z.flatten().std())


@pytest.mark.parametrize("closed_form", [True, False])
def test_ff_noise_std_is_min_sqrt_alpha_over_per_sample_fisher_and_1e3_x10_on_the_head_bias(
        data, fs, model, closed_form, monkeypatch):
    """F = mean_i (g_i + 1e-8)^2 with g_i the per-sample gradient of log p(y_i|x_i): the update
    divided by min(sqrt(alpha / F), 1e-3) (x10 on the classifier bias) is standard normal, both
    where the Fisher sets the std and where the cap does. `closed_form=False`: as for a net
    with a layer that has no closed form (per-sample gradients by vmap)."""
    if not closed_form:
        monkeypatch.setattr("sparse_mu.unlearn.fisher.grad_square_sums", lambda *a, **k: None)
    alpha = 1e-12
    net = copy.deepcopy(model)
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    xr, yr = batch(data, fs.retain)
    fisher = {k: (g + 1e-8).pow(2).mean(0) for k, g in sample_grads(net, xr, yr, sign=-1.0).items()}
    fit(FisherForgetting(net, task(data, fs, net), alpha=alpha, batch_size=64, chunk_size=16))
    fisher_set, capped = [], []
    for k, d in deltas(net, before).items():
        std = (alpha / fisher[k]).sqrt().clamp(max=1e-3)
        if k == "3.bias":
            z = d / (10 * std)
            assert 0.4 < z_std(z) < 1.8 and z.abs().max() < 4, k
            continue
        z = d / std
        fisher_set.append(z[std < 1e-3].flatten())
        capped.append(z[std == 1e-3].flatten())
    fisher_set, capped = torch.cat(fisher_set), torch.cat(capped)
    assert len(fisher_set) > 300 and len(capped) > 100  # both regimes are tested
    for z in (fisher_set, capped):
        assert 0.9 < z_std(z) < 1.1 and abs(float(z.mean())) < 0.1 and z.abs().max() < 5.5


def test_ff_batch_noise_var_is_the_published_per_batch_class_statistic(data, model):
    """ff_batch (no class surgery in random forgetting): per batch of 32 and class c,
    acc += mean_batch p(c|x) * (grad of the batch-mean CE toward c)^2, averaged over batches;
    var = alpha * min(1 / (acc + 1e-8), 1e3 (1e2 on the head)), averaged over input channels,
    x10 on the head and 1-D tensors."""
    alpha = 1e-9
    g = torch.Generator().manual_seed(1)
    fs = forget_set(data, data.train[torch.randperm(len(data.train), generator=g)[:40]])
    net = copy.deepcopy(model)
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    chunks = fs.retain.split(32)
    acc = ff_batch_statistic(net, (batch(data, idx)[0] for idx in chunks))
    fit(FisherForgettingBatch(net, task(data, fs, net), alpha=alpha, class_surgery=True, chunk_size=4))
    for k, d in deltas(net, before).items():
        var = alpha * (1 / (acc[k] / len(chunks) + 1e-8)).clamp(max=1e2 if k in HEAD else 1e3)
        if var.ndim > 1:
            var = var.mean(1, keepdim=True).expand_as(var)
        if k in HEAD or var.ndim == 1:
            var = var * 10
        z = d / var.sqrt()
        if z.numel() >= 100:
            assert 0.9 < z_std(z) < 1.1 and z.abs().max() < 5.5, k
        else:
            assert 0.4 < z_std(z) < 1.8 and z.abs().max() < 4.5, k
    # exactly: the noise is the job seed's standard normal draws, one tensor per parameter in order
    gen = torch.Generator().manual_seed(0)
    for k, d in deltas(net, before).items():
        var = alpha * (1 / (acc[k] / len(chunks) + 1e-8)).clamp(max=1e2 if k in HEAD else 1e3)
        var = var.mean(1, keepdim=True).expand_as(var) if var.ndim > 1 else var
        var = var * 10 if k in HEAD or var.ndim == 1 else var
        torch.testing.assert_close(d, var.sqrt() * torch.randn(d.shape, generator=gen), rtol=1e-4, atol=1e-7, msg=k)
    assert any(bool((acc[k] / len(chunks) < 1e-2).any()) for k in HEAD)  # both caps are reached
    assert any(bool((acc[k] / len(chunks) < 1e-3).any()) for k in acc if k not in HEAD)


def test_ff_batch_class_surgery_zeroes_the_forgotten_class_row_with_var_1e_4(data, model):
    """Class-wise forgetting of class 3: its classifier row and bias become 0 + sqrt(10 * 1e-4)
    N(0, 1); without class_surgery the row keeps its weights (plus the small noise)."""
    fs = forget_set(data, data.train[data.y[data.train] == 3], kind="class", classes=(3,))
    for surgery in (True, False):
        net = copy.deepcopy(model)
        before = torch.cat([net[3].weight[3], net[3].bias[3:4]]).detach().clone()
        fit(FisherForgettingBatch(net, task(data, fs, net), alpha=1e-9, class_surgery=surgery, chunk_size=4))
        row = torch.cat([net[3].weight[3], net[3].bias[3:4]]).detach()
        if surgery:
            z = row / 1e-3 ** 0.5
            assert abs(float(z.mean())) < 0.8 and 0.5 < z_std(z) < 1.6, z
        else:
            assert (row - before).abs().max() < 0.01 < before.abs().max()


def test_ff_batch_on_a_sparse_model_the_pruned_coordinates_have_no_gradient(data, model):
    """ff_batch on a pruned net: a pruned weight is no parameter, its gradient is 0 (as for the
    published `weight_orig * weight_mask`), so its acc is 0 and its var the cap alpha * 1e3; the
    mean over input channels runs over the whole row, pruned entries at the cap included; the
    pruned weights stay exactly 0 and the kept ones get the job seed's draws times sqrt(var)."""
    alpha = 1e-9
    g = torch.Generator().manual_seed(2)
    fs = forget_set(data, data.train[torch.randperm(len(data.train), generator=g)[:40]])
    net = copy.deepcopy(model)
    mask = Mask({"1.weight": torch.rand(net[1].weight.shape, generator=g) > 0.5})
    keep = mask.tensors["1.weight"]
    with torch.no_grad():
        net[1].weight.mul_(keep)
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    chunks = fs.retain.split(32)
    acc = ff_batch_statistic(net, (batch(data, idx)[0] for idx in chunks), {"1.weight": keep})
    # the dense statistic differs on the pruned coordinates: the test can tell the two apart
    assert bool((acc["1.weight"][~keep] == 0).all())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    t = UnlearnTask(data, fs, mask, BaseWeights(state, state, state))
    fit(FisherForgettingBatch(net, t, alpha=alpha, class_surgery=False, chunk_size=4), mask=mask)
    assert bool((net[1].weight[~keep] == 0).all())
    gen = torch.Generator().manual_seed(0)
    for k, d in deltas(net, before).items():
        var = alpha * (1 / (acc[k] / len(chunks) + 1e-8)).clamp(max=1e2 if k in HEAD else 1e3)
        var = var.mean(1, keepdim=True).expand_as(var) if var.ndim > 1 else var
        var = var * 10 if k in HEAD or var.ndim == 1 else var
        want = var.sqrt() * torch.randn(d.shape, generator=gen)
        if k == "1.weight":
            want = want * keep
        torch.testing.assert_close(d, want, rtol=1e-4, atol=1e-7, msg=k)


def test_ff_and_iu_read_their_statistics_with_eval_transforms(data, fs, model, monkeypatch):
    from sparse_mu.data import ImageData

    seen, loader = [], ImageData.loader
    monkeypatch.setattr(ImageData, "loader", lambda self, *a, **kw: seen.append(kw["train"]) or loader(self, *a, **kw))
    for cls in (FisherForgetting, FisherForgettingBatch, InfluenceUnlearning):
        net = copy.deepcopy(model)
        fit(cls(net, task(data, fs, net), batch_size=64, chunk_size=16))
    assert len(seen) >= 5 and all(t is False for t in seen), seen


def woodfisher(v: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """ALGORITHMS.md section 4, literally: k = v, o = g_1; for each next g: t = o.g;
    k -= (k.g / (m + t)) o; o -= (t / (m + t)) o."""
    m, k, o = len(grads), v.clone(), grads[0].clone()
    for g in grads[1:]:
        t = o @ g
        k = k - (k @ g) / (m + t) * o
        o = o - t / (m + t) * o
    return k


def flat(grads: dict) -> torch.Tensor:
    return torch.cat([g.flatten(1) for g in grads.values()], 1)


@pytest.mark.parametrize("samples, n_forget", [(1000, 40), (30, 40), (1, 40), (30, 150)])
def test_iu_step_is_alpha_times_the_woodfisher_inverse_hessian_of_v(data, samples, n_forget):
    """v = g_f / N - n_f / (N n_r) g_r (summed per-sample CE gradients, eval mode); the
    recursion runs over min(samples, n_r) retain samples drawn by the job seed; theta += alpha k.
    One sample: k = v. 150 of 200 forgotten: D_f has more batches than D_r."""
    fs = random_forget(data, n_forget)
    alpha, seed = 2.0, 3
    net = mlp(hidden=32)  # at initialisation: gradients large enough that H^-1 v is far from v
    before = torch.cat([p.detach().flatten() for p in net.parameters()])
    xr, yr = batch(data, fs.retain)
    xf, yf = batch(data, fs.forget)
    g_r, g_f = flat(sample_grads(net, xr, yr)), flat(sample_grads(net, xf, yf))
    n_r, n_f = len(xr), len(xf)
    n = n_r + n_f
    v = g_f.sum(0) / n - n_f / (n * n_r) * g_r.sum(0)
    order = torch.randperm(n_r, generator=torch.Generator().manual_seed(seed))[:samples]
    # fs.retain is sorted, and xr is in its order: position i of the draw is sample fs.retain[i]
    k = woodfisher(v, [g_r[i] for i in order])
    assert (k - v).norm() > 0.3 * v.norm() or samples == 1  # the test tells H^-1 v from v
    module = InfluenceUnlearning(net, task(data, fs, net), alpha=alpha, samples=samples, batch_size=64,
                                 chunk_size=16, seed=seed)
    fit(module)
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    torch.testing.assert_close(after - before, alpha * k, atol=1e-6 * float((alpha * k).abs().max()) + 1e-7,
                               rtol=1e-3)
