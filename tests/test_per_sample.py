"""Vectorised gradients equal the per-sample autograd loop's, with BatchNorm in eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparse_mu.models import SmallCNN
from sparse_mu.pruning import Mask
from sparse_mu.pruning.pruners import magnitude_scores
from sparse_mu.unlearn.per_sample import (
    CPU_CHUNK,
    chunk_size_for,
    class_grads,
    flatten,
    keep_masks,
    log_likelihood,
    per_sample_grads,
    summed_grad,
)


@pytest.fixture(scope="module")
def net_and_batch():
    torch.manual_seed(0)
    net = SmallCNN(10, 3, 8, width=8)
    net.train()
    net(torch.randn(64, 3, 8, 8) * 2 + 1)  # BatchNorm running statistics away from (0, 1)
    net.eval()
    x, y = torch.randn(11, 3, 8, 8), torch.randint(0, 10, (11,))
    return net, x, y, loop_grads(net, x, y)


def loop_grads(net, x, y, loss=F.cross_entropy):
    params = dict(net.named_parameters())
    out = {k: [] for k in params}
    for i in range(len(x)):
        grads = torch.autograd.grad(loss(net(x[i:i + 1]), y[i:i + 1]), list(params.values()))
        for k, g in zip(params, grads, strict=True):
            out[k].append(g)
    return {k: torch.stack(v) for k, v in out.items()}


def test_per_sample_grads_equal_the_loop(net_and_batch):
    net, x, y, want = net_and_batch
    for chunk in (4, 11):
        chunks = list(per_sample_grads(net, x, y, chunk_size=chunk))
        assert len(chunks) == -(-len(x) // chunk)
        got = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
        assert set(got) == set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-4, msg=k)


def test_log_likelihood_is_minus_the_loss(net_and_batch):
    net, x, y, _ = net_and_batch
    ce = next(per_sample_grads(net, x, y, chunk_size=len(x)))
    ll = next(per_sample_grads(net, x, y, chunk_size=len(x), loss=log_likelihood))
    for k in ce:
        torch.testing.assert_close(ll[k], -ce[k])


def test_masked_and_summed_and_class_grads(net_and_batch):
    net, x, y, want = net_and_batch
    mask = Mask.from_scores(magnitude_scores(net), 0.5)
    keep = keep_masks(net, mask)
    grads = next(per_sample_grads(net, x, y, chunk_size=len(x), keep=keep))
    for k, m in mask.tensors.items():
        assert (grads[k][:, ~m] == 0).all() and grads[k][:, m].abs().sum() > 0
    for k, g in summed_grad(net, x, y).items():
        torch.testing.assert_close(g, want[k].sum(0), atol=1e-5, rtol=1e-4)
    per_class, prob = class_grads(net, x, chunk_size=3)
    torch.testing.assert_close(prob, net(x).softmax(-1))
    for c in (0, 9):
        loss = F.cross_entropy(net(x), torch.full((len(x),), c))
        for (k, p), g in zip(net.named_parameters(), torch.autograd.grad(loss, list(net.parameters())), strict=True):
            torch.testing.assert_close(per_class[k][c], g, atol=1e-6, rtol=1e-4, msg=k)
            assert p.grad is None  # nothing touched .grad
    assert flatten(grads).shape == (len(x), sum(p.numel() for p in net.parameters()))


def test_chunk_size_follows_the_memory_budget_and_the_cpu_cap(net_and_batch):
    net = net_and_batch[0]
    per_sample = 2 * 4 * sum(p.numel() for p in net.parameters())
    assert chunk_size_for(net, 0.1) == int(0.1 * 2**20 // per_sample) < CPU_CHUNK
    assert chunk_size_for(net, 1e-6) == 1
    assert chunk_size_for(net, 1024) == CPU_CHUNK  # on a CPU: the measured fastest size
