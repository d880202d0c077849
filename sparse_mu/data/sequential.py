"""Sequential deletion requests (`forget=sequential`): D_f arrives in `rounds` parts.

`SequentialForget.select` draws all of D_f as class-wise or random forgetting does and splits it
into seeded parts; the run's main result stays the one-shot deletion of all of D_f. The
`sequential` application (`sparse_mu.sequential`) then deletes the parts one after another:
`request(data, forget, r)` is what round r's unlearner sees, `cumulative(data, forget, r)` what
round r is measured (and its Retrain reference trained) against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from sparse_mu.data.dataset import ImageData
from sparse_mu.data.forget import ClassForget, ForgetSet, ForgetSpec, RandomForget, _make
from sparse_mu.errors import check

BASES = ("class", "random")


@dataclass
class SequentialForget(ForgetSpec):
    """D_f drawn as `of` (class: `class_idx`, or a seeded `count` of its samples; random:
    `fraction` of D, or `count` samples) and split into `rounds` seeded parts of sizes differing
    by at most one; round r deletes part r from the model of round r-1."""

    of: Literal["class", "random"] = "random"
    rounds: int = 3
    class_idx: int | list[int] = 0
    fraction: float = 0.1
    count: int | None = None
    seed: int = 0

    def whole(self) -> ForgetSpec:
        """The one-shot setting that draws all of D_f."""
        check(self.of in BASES, "forget.of", f"one of {', '.join(BASES)}", self.of)
        if self.of == "class":
            return ClassForget(class_idx=self.class_idx, count=self.count, seed=self.seed)
        return RandomForget(fraction=self.fraction, count=self.count, seed=self.seed)

    def select(self, data: ImageData) -> ForgetSet:
        everything = self.whole().select(data)
        n = len(everything.forget)
        check(isinstance(self.rounds, int) and 1 <= self.rounds <= n, "forget.rounds",
              f"an integer in [1, {n}] (|D_f| = {n}: every round deletes at least one sample)", self.rounds)
        g = torch.Generator().manual_seed(self.seed)
        shuffled = everything.forget[torch.randperm(n, generator=g)]
        parts = tuple(p.sort().values for p in shuffled.tensor_split(self.rounds))
        return replace(everything, parts=parts)


def deleted(forget: ForgetSet, r: int) -> torch.Tensor:
    """The samples deleted by the end of round r (parts 1..r)."""
    return torch.cat(forget.parts[:r]) if r else forget.forget[:0]


def cumulative(data: ImageData, forget: ForgetSet, r: int) -> ForgetSet:
    """After round r: D_f = parts 1..r, D_r = the rest of D (the kind and classes of the whole:
    class-wise requests leave the class's test images out of TA in every round). Round k's is
    the one-shot forget set (the same `identity`, hence the same Retrain reference)."""
    return _make(forget.kind, data, deleted(forget, r), forget.classes)


def request(data: ImageData, forget: ForgetSet, r: int) -> tuple[ImageData, ForgetSet]:
    """What round r's unlearner sees: D without the parts deleted before (its "all" samples),
    D_f = part r, D_r = D minus parts 1..r."""
    held = data.train[~torch.isin(data.train, deleted(forget, r - 1))]
    after = cumulative(data, forget, r)
    return replace(data, train=held), ForgetSet(forget.kind, forget.parts[r - 1], after.retain, forget.classes)
