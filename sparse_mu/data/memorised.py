"""Hard forget sets by memorisation (`forget=memorised`): the most (or least) memorised samples.

The proxy costs no extra model: while the base model trains on all of D, every training step
records the softmax confidence of each sample in its true label (`training.Classifier` with
`record=True`; saved as `confidence.pt` in the base artifact). A sample's memorisation score is
1 minus its mean confidence over the epochs: samples the model fits late or never, with low
confidence, are the memorised ones; those it fits at once score low (the learning-speed proxy of
Jiang et al. 2021, used by the RUM paper, Zhao et al. 2024, to build hard forget sets). D_f is
therefore chosen after the base stage; the base model never depends on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from sparse_mu.data.dataset import ImageData
from sparse_mu.data.forget import ForgetSet, ForgetSpec, _make
from sparse_mu.errors import check

log = logging.getLogger("sparse_mu")

ORDERS = ("most", "least")


def memorisation(record: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per sample of the data set: 1 - mean recorded confidence in the true label; NaN for a
    sample no training step saw (e.g. with trainer.limit_train_batches)."""
    total, seen = record["sum"].double(), record["count"].double()
    return torch.where(seen > 0, 1 - total / seen.clamp(min=1), torch.nan)


@dataclass
class MemorisedForget(ForgetSpec):
    """D_f = the `count` (or `fraction` of D) samples the base model memorised `most` (or
    `least`), by `memorisation`; ties go to the lower index. Samples no training step saw rank
    last either way."""

    order: Literal["most", "least"] = "most"
    fraction: float = 0.1
    count: int | None = None

    needs_record = True

    def size(self, data: ImageData) -> int:
        n = len(data.train)
        check(self.order in ORDERS, "forget.order", f"one of {', '.join(ORDERS)}", self.order)
        if self.count is not None:
            check(1 <= self.count < n, "forget.count", f"null or an integer in [1, {n - 1}]", self.count)
            return self.count
        check(0 < self.fraction < 1, "forget.fraction", "in (0, 1)", self.fraction)
        return max(1, round(self.fraction * n))

    def draft(self, data: ImageData) -> ForgetSet:
        """A stand-in of the right size (the first samples of D): the settings' checks only."""
        return _make("memorised", data, data.train[: self.size(data)])

    def select(self, data: ImageData, record: dict[str, torch.Tensor] | None = None) -> ForgetSet:
        if record is None:
            raise RuntimeError("MemorisedForget.select needs the base model's confidence record")  # a bug
        k = self.size(data)
        score = memorisation(record)[data.train]
        unseen = torch.isnan(score)
        if unseen.any():
            log.warning("forget: %d of %d samples of D were never seen in training; they rank last",
                        int(unseen.sum()), len(score))
        key = -score if self.order == "most" else score
        order = torch.argsort(key.nan_to_num(torch.inf), stable=True)
        return _make("memorised", data, data.train[order[:k]])
