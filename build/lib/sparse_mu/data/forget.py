"""Forget sets: which training samples an unlearner must remove, as index sets into D."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sparse_mu.data.dataset import ImageData
from sparse_mu.errors import check

if TYPE_CHECKING:
    from sparse_mu.data.backdoor import BackdoorForget


@dataclass(frozen=True)
class ForgetSet:
    """D_f and D_r = D minus D_f (dataset indices, sorted); class-wise, the forgotten classes;
    backdoor forgetting, the poisoning recipe (its trigger is needed to measure ASR)."""

    kind: str
    forget: torch.Tensor
    retain: torch.Tensor
    classes: tuple[int, ...] = ()
    backdoor: BackdoorForget | None = None

    @property
    def class_idx(self) -> int | list[int] | None:
        """The forgotten class (a list when several), None unless class-wise."""
        if not self.classes:
            return None
        return self.classes[0] if len(self.classes) == 1 else list(self.classes)

    def forgotten(self, labels: torch.Tensor) -> torch.Tensor:
        """Which `labels` belong to a forgotten class (all False unless class-wise)."""
        return torch.isin(labels, torch.tensor(self.classes, dtype=labels.dtype, device=labels.device))

    def test_indices(self, data: ImageData) -> torch.Tensor:
        """The test set TA is measured on: class-wise forgetting leaves the classes out."""
        return data.test[~self.forgotten(data.y[data.test])]

    def to_json(self) -> dict:
        out = {"kind": self.kind, "class_idx": self.class_idx, "forget": self.forget.tolist()}
        if self.backdoor is not None:
            out["backdoor"] = self.backdoor.settings()
        return out


def _make(kind: str, data: ImageData, forget: torch.Tensor, classes: tuple[int, ...] = (),
          backdoor: BackdoorForget | None = None) -> ForgetSet:
    forget = forget.sort().values
    keep = torch.ones(len(data.y), dtype=torch.bool)
    keep[forget] = False
    retain = data.train[keep[data.train]]
    if len(forget) + len(retain) != len(data.train) or not torch.isin(forget, data.train).all():
        raise RuntimeError("forget set is not a subset of the training set D")  # a bug, not user input
    return ForgetSet(kind, forget, retain, classes, backdoor)


class ForgetSpec:
    """A forgetting setting (config group `forget`): `select(data)` draws D_f from D.

    `training_data(data)` is the data set every model of the run is trained on; only backdoor
    forgetting changes it (it poisons part of D before anything trains).
    """

    def training_data(self, data: ImageData) -> ImageData:
        return data

    def select(self, data: ImageData) -> ForgetSet:
        raise NotImplementedError


@dataclass
class ClassForget(ForgetSpec):
    """Class-wise forgetting: all training samples of `class_idx` (one class or a list of them),
    or a seeded `count` of those samples."""

    class_idx: int | list[int] = 0
    count: int | None = None
    seed: int = 0

    def classes(self, data: ImageData) -> tuple[int, ...]:
        many = isinstance(self.class_idx, (list, tuple))
        classes = tuple(self.class_idx) if many else (self.class_idx,)
        n = data.num_classes
        check(len(classes) > 0 and all(isinstance(c, int) and 0 <= c < n for c in classes)
              and len(set(classes)) == len(classes) and len(classes) < n, "forget.class_idx",
              f"an integer in [0, {n - 1}] for {data.name} (or a list of distinct ones, not all {n})",
              self.class_idx)
        return classes

    def select(self, data: ImageData) -> ForgetSet:
        classes = self.classes(data)
        members = data.train[torch.isin(data.y[data.train], torch.tensor(classes))]
        if self.count is not None:
            check(1 <= self.count <= len(members), "forget.count",
                  f"null (the whole class) or in [1, {len(members)}]", self.count)
            g = torch.Generator().manual_seed(self.seed)
            members = members[torch.randperm(len(members), generator=g)[: self.count]]
        return _make("class", data, members, classes)


def seeded_subset(data: ImageData, fraction: float, count: int | None, seed: int) -> torch.Tensor:
    """`count` samples of D (or round(`fraction` * |D|), at least one), drawn with `seed`."""
    n = len(data.train)
    k = count if count is not None else max(1, round(fraction * n))
    g = torch.Generator().manual_seed(seed)
    return data.train[torch.randperm(n, generator=g)[:k]]


@dataclass
class RandomForget(ForgetSpec):
    """Random forgetting: a seeded `fraction` of D (or exactly `count` samples), all classes."""

    fraction: float = 0.1
    count: int | None = None
    seed: int = 0

    def select(self, data: ImageData) -> ForgetSet:
        n = len(data.train)
        if self.count is not None:
            check(1 <= self.count < n, "forget.count", f"null or an integer in [1, {n - 1}]", self.count)
        else:
            check(0 < self.fraction < 1, "forget.fraction", "in (0, 1)", self.fraction)
        return _make("random", data, seeded_subset(data, self.fraction, self.count, self.seed))
