"""Forget sets: which training samples an unlearner must remove, as index sets into D."""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    fine_class: int | None = None  # sub-class forgetting: the forgotten fine class
    fine_test: torch.Tensor | None = None  # ... and its test images (dataset indices)
    # sequential deletion requests: D_f split into the parts deleted one after another
    parts: tuple[torch.Tensor, ...] = ()

    @property
    def class_idx(self) -> int | list[int] | None:
        """The forgotten class (a list when several), None unless class-wise."""
        if not self.classes:
            return None
        return self.classes[0] if len(self.classes) == 1 else list(self.classes)

    def forgotten(self, labels: torch.Tensor) -> torch.Tensor:
        """Which `labels` belong to a forgotten class (all False unless class-wise)."""
        return torch.isin(labels, torch.tensor(self.classes, dtype=labels.dtype, device=labels.device))

    def forgotten_test(self, data: ImageData) -> torch.Tensor:
        """Which test images (a mask over `data.test`) belong to what was forgotten: a forgotten
        class, or in sub-class forgetting the forgotten fine class (its coarse label is kept)."""
        if self.fine_test is not None:
            return torch.isin(data.test, self.fine_test)
        return self.forgotten(data.y[data.test])

    def test_indices(self, data: ImageData) -> torch.Tensor:
        """The test set TA is measured on: class-wise forgetting leaves the classes out."""
        return data.test[~self.forgotten_test(data)]

    def identity(self) -> dict:
        """Which samples are forgotten (the cache keys' view): not in how many requests, so the
        one-shot deletion of D_f and the last of its sequential rounds share a Retrain reference."""
        out = {"kind": self.kind, "class_idx": self.class_idx, "forget": self.forget.tolist()}
        if self.fine_class is not None:
            out["fine_class"] = self.fine_class
        if self.backdoor is not None:
            out["backdoor"] = self.backdoor.settings()
        return out

    def to_json(self) -> dict:
        """forget_indices.json: the identity and, for sequential requests, the parts."""
        parts = {"parts": [p.tolist() for p in self.parts]} if self.parts else {}
        return self.identity() | parts


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
    and sub-class forgetting change it (before anything trains). A spec with `needs_record`
    ranks D by what the base model recorded while training on all of D (`sparse_mu.data.memorised`):
    its D_f is known only after the base stage, `select(data, record)`; before, `draft(data)`
    stands in for it (same size) so every setting is checked before anything trains.
    """

    needs_record = False

    def training_data(self, data: ImageData) -> ImageData:
        return data

    def select(self, data: ImageData) -> ForgetSet:
        raise NotImplementedError

    def draft(self, data: ImageData) -> ForgetSet:
        """D_f as known before anything trains (the final one unless `needs_record`)."""
        return self.select(data)


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


# CIFAR-100's fine class -> its superclass (Krizhevsky's "coarse" labels), fine classes in the
# data set's order (0 apple, 1 aquarium_fish, ...).
CIFAR100_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)


@dataclass
class SubClassForget(ForgetSpec):
    """Sub-class forgetting: every model trains on coarse labels (`coarse[fine]`: CIFAR-100's
    20 superclasses with `coarse: cifar100`, or a list giving each fine class's coarse class),
    and D_f is all training samples of one fine class `fine_class` (or a seeded `count` of
    them). Its coarse class is not forgotten: TA leaves out only the fine class's test images,
    whose own accuracy (on their coarse label) is `TA_forgotten_class`."""

    fine_class: int = 0
    coarse: str | list[int] = "cifar100"
    count: int | None = None
    seed: int = 0

    def mapping(self, data: ImageData) -> torch.Tensor:
        n = data.num_classes
        if isinstance(self.coarse, str):
            check(self.coarse == "cifar100", "forget.coarse", "cifar100 or a list of coarse classes, one per class",
                  self.coarse)
            table = CIFAR100_COARSE
        else:
            table = tuple(self.coarse)
        k = max(table) + 1 if table else 0
        check(len(table) == n and all(isinstance(c, int) and c >= 0 for c in table) and set(table) == set(range(k))
              and k < n, "forget.coarse",
              f"one coarse class per class of {data.name} ({n}), numbered 0..K-1 with K < {n}", self.coarse)
        check(isinstance(self.fine_class, int) and 0 <= self.fine_class < n, "forget.fine_class",
              f"an integer in [0, {n - 1}] for {data.name}", self.fine_class)
        return torch.tensor(table, dtype=data.y.dtype)

    def training_data(self, data: ImageData) -> ImageData:
        """The data with coarse labels; the fine labels are kept for `select`. The fingerprint
        covers the relabelling, so coarse models are cached apart from fine ones."""
        check(isinstance(data, ImageData), "forget", "an in-memory data set for forget=subclass, not an image folder",
              type(data).__name__)
        table = self.mapping(data)
        self._fine = data.y
        names = [f"coarse {c}" for c in range(int(table.max()) + 1)]
        return data.derived({"coarse": table.tolist()}, y=table[data.y], classes=names)

    def select(self, data: ImageData) -> ForgetSet:
        fine = getattr(self, "_fine", None)
        if fine is None:
            raise RuntimeError("SubClassForget.select before training_data")  # a bug, not user input
        members = data.train[fine[data.train] == self.fine_class]
        if self.count is not None:
            check(1 <= self.count <= len(members), "forget.count",
                  f"null (the whole fine class) or in [1, {len(members)}]", self.count)
            g = torch.Generator().manual_seed(self.seed)
            members = members[torch.randperm(len(members), generator=g)[: self.count]]
        out = _make("subclass", data, members)
        return replace(out, fine_class=self.fine_class, fine_test=data.test[fine[data.test] == self.fine_class])
