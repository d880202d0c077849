"""Batches straight from in-memory tensors: no per-sample Python work, augmentation batched.

A `TensorLoader` is a plain iterable that Lightning accepts in place of a DataLoader. It yields
`(x, y, idx)`: normalised float images, labels and the samples' dataset indices (so tests and
methods can tell exactly which samples a step saw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class EpochSampler(torch.utils.data.Sampler):
    """The sample order for one epoch: a function of (seed, epoch), so runs resume exactly.

    Lightning calls `set_epoch` on a loader's `sampler` at the start of every epoch. Under
    torch.distributed each rank takes every world-size-th position of the epoch's order.
    Iterating yields positions 0..n-1 (this rank's), so it also serves as a DataLoader sampler.
    """

    def __init__(self, n: int, shuffle: bool, seed: int):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        # Mixed (an LCG step) so no epoch's order coincides with another draw seeded by the
        # plain job seed, e.g. a random forget set (it would then come first in epoch 0).
        mixed = ((self.seed * 1_000_003 + self.epoch) * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % 2**63
        return torch.Generator(device).manual_seed(mixed)

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=self.generator())

    def shard(self) -> tuple[int, int]:
        """(rank, world size) to split the epoch over: training (shuffled) orders only, so every
        rank evaluates every sample."""
        dist = torch.distributed
        if self.shuffle and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        """Positions per rank."""
        return math.ceil(self.n / self.shard()[1])

    def rank_order(self) -> torch.Tensor:
        """This rank's positions in the epoch's order."""
        order = self.order()
        rank, world = self.shard()
        if world > 1:  # pad by wrapping so every rank takes the same number of steps
            order = torch.cat([order, order[: len(self) * world - len(order)]])[rank::world]
        return order

    def __iter__(self):
        return iter(self.rank_order().tolist())


@dataclass
class Augment:
    """Random crop with zero padding and horizontal flip, as one gather over the batch."""

    crop_padding: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        p, dev = self.crop_padding, x.device
        if p:
            x = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b, 1), generator=g, device=dev)
        dx = torch.randint(0, 2 * p + 1, (b, 1), generator=g, device=dev)
        cols = torch.arange(w, device=dev).expand(b, w)
        if self.flip:
            flip = torch.rand(b, 1, generator=g, device=dev) < 0.5
            cols = torch.where(flip, cols.flip(1), cols)
        rows = torch.arange(h, device=dev) + dy
        cols = cols + dx
        out = x[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2)  # the gather puts channels last; keep that memory layout


class TensorLoader:
    """Mini-batches of `indices` into the uint8 image tensor `x`.

    `device` is where batches are made ("cuda" means the current CUDA device of the process, so
    DDP ranks each use their own); the images are copied there once per data set and device.
    Under torch.distributed, each rank takes its share of a training epoch (`EpochSampler`).
    """

    def __init__(self, store, indices: torch.Tensor, *, batch_size: int, shuffle: bool,
                 augment: Augment | None = None, seed: int = 0, drop_last: bool = False,
                 device: str | torch.device = "cpu"):
        self.store, self.indices = store, indices.cpu()
        self.batch_size, self.drop_last, self.device = batch_size, drop_last, device
        self.augment = augment if augment is not None and augment.active else None
        self.sampler = EpochSampler(len(indices), shuffle, seed)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        device = torch.device(self.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        x_all, y_all, scale, shift = self.store.on(device)
        order = self.indices[self.sampler.rank_order()].to(device)
        g = self.sampler.generator(device) if self.augment else None
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = x_all[idx]
            if self.augment:
                x = self.augment(x, g)
            yield x.float().mul_(scale).add_(shift), y_all[idx], idx
