"""Tiny data, nets, training runs and direct (slow, obvious) references for the algorithm tests.

Every reference here is written from ALGORITHMS.md, not from the code under test: plain
autograd, Python loops over samples, full batches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu.callbacks import MaskEnforcer
from sparse_mu.data import Augment, Digits, ForgetSet, ImageData, prepare

EMPTY = torch.zeros(0, dtype=torch.long)
# full-batch plain SGD: one step per epoch, order-free, no momentum or weight decay to replay
PLAIN = {"batch_size": 10_000, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}


@cache
def _digits() -> ImageData:
    return prepare(Digits())


def small_digits(n_train: int = 200, n_test: int = 100) -> ImageData:
    """The first n_train + n_test samples of digits' training set as D and a test set."""
    full = _digits()
    idx = full.train[: n_train + n_test]
    return ImageData("digits_small", full.x[idx], full.y[idx], torch.arange(n_train), EMPTY,
                     torch.arange(n_train, n_train + n_test), full.classes, full.mean, full.std,
                     Augment(), "digits_small")


def mlp(seed: int = 0, hidden: int = 16) -> nn.Module:
    """64 -> hidden -> 10; no BatchNorm or dropout, so train and eval mode compute the same."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def batch(data: ImageData, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All of `idx` as one batch with eval transforms (= train transforms on digits)."""
    x, y, _ = next(iter(data.loader(idx, batch_size=len(idx), train=False)))
    return x, y


def trained(data: ImageData, idx: torch.Tensor, net: nn.Module, steps: int = 300) -> nn.Module:
    """`net` fitted to `idx` (full-batch Adam): a model that has memorised its training set."""
    x, y = batch(data, idx)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def accuracy(net: nn.Module, data: ImageData, idx: torch.Tensor) -> float:
    x, y = batch(data, idx)
    with torch.no_grad():
        return 100.0 * (net(x).argmax(1) == y).float().mean().item()


def ce(net: nn.Module, data: ImageData, idx: torch.Tensor) -> float:
    x, y = batch(data, idx)
    with torch.no_grad():
        return F.cross_entropy(net(x), y).item()


def fit(module: L.LightningModule, mask=None, batches=None, callbacks=(), max_epochs=None, **kw) -> L.Trainer:
    cbs = [*callbacks, *([MaskEnforcer(mask)] if mask is not None else [])]
    trainer = L.Trainer(max_epochs=max_epochs or module.epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=cbs,
                        limit_train_batches=batches, accelerator="cpu", **kw)
    trainer.fit(module)
    return trainer


def sgd_reference(net: nn.Module, loss: Callable[[nn.Module, int], torch.Tensor], steps: int, lr: float) -> nn.Module:
    """A copy of `net` after `steps` plain SGD steps on loss(net, step)."""
    net = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for step in range(steps):
        opt.zero_grad()
        loss(net, step).backward()
        opt.step()
    return net


def assert_same_weights(a: nn.Module, b: nn.Module, atol: float = 1e-6) -> None:
    for (k, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), atol=atol, rtol=1e-5, msg=k)


def forget_set(data: ImageData, forget: torch.Tensor, kind: str = "random", classes=()) -> ForgetSet:
    forget = forget.sort().values
    retain = data.train[~torch.isin(data.train, forget)]
    return ForgetSet(kind, forget, retain, tuple(classes))


def random_forget(data: ImageData, count: int = 40, seed: int = 0) -> ForgetSet:
    """`count` seeded samples of D as a random forget set."""
    g = torch.Generator().manual_seed(seed)
    return forget_set(data, data.train[torch.randperm(len(data.train), generator=g)[:count]])


def ff_batch_statistic(net: nn.Module, inputs, keep: dict | None = None, classes: int = 10) -> dict:
    """ff_batch's accumulator written out: per input batch, sum over classes c of the batch-mean
    p(c|x) times the squared gradient of the batch-mean CE towards c; coordinates outside `keep`
    (a pruning mask per parameter name) are zeroed."""
    keep = keep or {}
    acc = {k: torch.zeros_like(p) for k, p in net.named_parameters()}
    for x in inputs:
        out = net(x)
        prob = out.softmax(-1).detach()
        for c in range(classes):
            grads = torch.autograd.grad(F.cross_entropy(out, torch.full((len(x),), c)), list(net.parameters()),
                                        retain_graph=True)
            for (k, _), g in zip(net.named_parameters(), grads, strict=True):
                acc[k] += prob[:, c].mean() * (g * keep[k] if k in keep else g).pow(2)
    return acc
