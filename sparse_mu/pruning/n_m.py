"""N:M semi-structured pruning (e.g. 2:4, the pattern sparse tensor cores run)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from sparse_mu.errors import check
from sparse_mu.pruning.mask import Mask, prunable_weights
from sparse_mu.pruning.pruners import OMP

log = logging.getLogger("sparse_mu")


def _rows(w: torch.Tensor) -> torch.Tensor:
    """The weight as (out, in) rows whose consecutive entries are input channels: a conv's
    (out, in, kh, kw) becomes (out, kh * kw * in), input channels innermost (as NVIDIA's ASP)."""
    return w.permute(0, *range(2, w.dim()), 1).reshape(w.shape[0], -1) if w.dim() > 2 else w


def _unrows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) <= 2:
        return rows.view(shape)
    out, cin, *kernel = shape
    return rows.view(out, *kernel, cin).permute(0, len(shape) - 1, *range(1, len(shape) - 1))


def compatible(w: torch.Tensor, m: int) -> bool:
    """A layer takes the pattern when its input channels come in whole groups of `m`."""
    return w.dim() >= 2 and w.shape[1] % m == 0


def n_m_mask(net: nn.Module, n: int, m: int) -> tuple[Mask, list[str]]:
    """Keep the `n` largest |w| in every group of `m` consecutive input channels (per output
    unit and kernel position) of every compatible prunable weight; incompatible layers (input
    channels not a multiple of `m`, e.g. a first conv on RGB) stay dense and are returned."""
    tensors, dense = {}, []
    for name, w in prunable_weights(net).items():
        if not compatible(w, m):
            tensors[name] = torch.ones_like(w, dtype=torch.bool)
            dense.append(name)
            continue
        groups = _rows(w.detach().abs()).reshape(-1, m)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(1, groups.topk(n, dim=1).indices, True)
        tensors[name] = _unrows(keep.view(w.shape[0], -1), w.shape).contiguous()
    return Mask(tensors), dense


@dataclass
class NMPruner(OMP):
    """OMP with an N:M pattern instead of a global threshold: prune the trained weights to `n`
    kept of every `m` consecutive input channels, rewind as OMP (`rewind`), retrain with the
    mask. `sparsity` follows: 1 - n / m over the compatible layers."""

    n: int = 2
    m: int = 4
    sparsity: float | None = None

    def __post_init__(self):
        check(isinstance(self.m, int) and self.m >= 2, "pruner.m", "an integer >= 2", self.m)
        check(isinstance(self.n, int) and 1 <= self.n < self.m, "pruner.n", f"an integer in [1, {self.m - 1}]", self.n)
        check(self.sparsity is None, "pruner.sparsity", "null for pruner=n_m (it is 1 - n / m)", self.sparsity)
        self.sparsity = 1 - self.n / self.m
        super().__post_init__()

    def validate(self, net: nn.Module) -> None:
        check(any(compatible(w, self.m) for w in prunable_weights(net).values()), "pruner.m",
              "a group size that divides the input channels of at least one prunable layer", self.m)

    def prune(self, net, base, train):
        net.load_state_dict(base.final)
        mask, dense = n_m_mask(net, self.n, self.m)
        if dense:
            log.info("pruner n_m: %d layer(s) stay dense (input channels not a multiple of %d): %s",
                     len(dense), self.m, ", ".join(dense))
        return train(self.start_weights(base, base.final), mask), mask
