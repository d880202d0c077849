"""Forget sets: which training samples an unlearner must remove, as index sets into D."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparse_mu.data.dataset import ImageData
from sparse_mu.errors import check


@dataclass(frozen=True)
class ForgetSet:
    """D_f and D_r = D minus D_f (dataset indices, sorted) and, class-wise, the class."""

    kind: str
    forget: torch.Tensor
    retain: torch.Tensor
    class_idx: int | None = None

    def test_indices(self, data: ImageData) -> torch.Tensor:
        """The test set TA is measured on: class-wise forgetting leaves the class out."""
        if self.class_idx is None:
            return data.test
        return data.test[data.y[data.test] != self.class_idx]

    def to_json(self) -> dict:
        return {"kind": self.kind, "class_idx": self.class_idx, "forget": self.forget.tolist()}


def _make(kind: str, data: ImageData, forget: torch.Tensor, class_idx: int | None = None) -> ForgetSet:
    forget = forget.sort().values
    keep = torch.ones(len(data.y), dtype=torch.bool)
    keep[forget] = False
    retain = data.train[keep[data.train]]
    if len(forget) + len(retain) != len(data.train) or not torch.isin(forget, data.train).all():
        raise RuntimeError("forget set is not a subset of the training set D")  # a bug, not user input
    return ForgetSet(kind, forget, retain, class_idx)


@dataclass
class ClassForget:
    """Class-wise forgetting: all training samples of `class_idx`, or a seeded `count` of them."""

    class_idx: int = 0
    count: int | None = None
    seed: int = 0

    def select(self, data: ImageData) -> ForgetSet:
        check(0 <= self.class_idx < data.num_classes, "forget.class_idx",
              f"an integer in [0, {data.num_classes - 1}] for {data.name}", self.class_idx)
        members = data.train[data.y[data.train] == self.class_idx]
        if self.count is not None:
            check(1 <= self.count <= len(members), "forget.count",
                  f"null (the whole class) or in [1, {len(members)}]", self.count)
            g = torch.Generator().manual_seed(self.seed)
            members = members[torch.randperm(len(members), generator=g)[: self.count]]
        return _make("class", data, members, self.class_idx)


@dataclass
class RandomForget:
    """Random forgetting: a seeded `fraction` of D (or exactly `count` samples), all classes."""

    fraction: float = 0.1
    count: int | None = None
    seed: int = 0

    def select(self, data: ImageData) -> ForgetSet:
        n = len(data.train)
        if self.count is not None:
            check(1 <= self.count < n, "forget.count", f"null or an integer in [1, {n - 1}]", self.count)
            k = self.count
        else:
            check(0 < self.fraction < 1, "forget.fraction", "in (0, 1)", self.fraction)
            k = max(1, round(self.fraction * n))
        g = torch.Generator().manual_seed(self.seed)
        return _make("random", data, data.train[torch.randperm(n, generator=g)[:k]])
