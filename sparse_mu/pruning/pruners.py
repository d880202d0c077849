"""Pruners turn a trained base model into (weights, mask).

A pruner gets the base model's weights (at initialisation, at the rewind epoch, and at the end
of training) and a `train(start_weights, mask)` function that runs the base training profile
with the mask held; it returns the final weights and the mask (None for dense).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sparse_mu.errors import check
from sparse_mu.pruning.mask import Mask, prunable_weights

State = dict[str, torch.Tensor]
TrainFn = Callable[[State, Mask], State]


@dataclass
class BaseWeights:
    """The dense base model's weights at initialisation, at the rewind epoch and trained."""

    init: State
    rewind: State
    final: State


class Pruner:
    """Interface: `prune(net, base, train) -> (weights, mask or None)`."""

    sparsity: float = 0.0

    def prune(self, net: nn.Module, base: BaseWeights, train: TrainFn) -> tuple[State, Mask | None]:
        raise NotImplementedError


def _check_sparsity(sparsity: float) -> None:
    check(0 <= sparsity < 1, "pruner.sparsity", "a fraction in [0, 1)", sparsity)


@dataclass
class Dense(Pruner):
    """No pruning: the base model as trained."""

    sparsity: float = 0.0

    def __post_init__(self):
        check(self.sparsity == 0, "pruner.sparsity", "0 for pruner=dense (pick pruner=omp to prune)", self.sparsity)

    def prune(self, net, base, train):
        return base.final, None


def magnitude_scores(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: w.detach().abs() for k, w in prunable_weights(net).items()}


@dataclass
class OMP(Pruner):
    """One-shot magnitude pruning: prune the trained weights by |w| to `sparsity` (globally, or
    per layer if `layerwise`), rewind the survivors to the rewind-epoch weights (`rewind: init`
    rewinds to initialisation, `rewind: none` keeps the trained weights), then retrain with the
    mask for the training profile's schedule.
    """

    sparsity: float = 0.95
    layerwise: bool = False
    rewind: str = "epoch"

    def __post_init__(self):
        _check_sparsity(self.sparsity)
        check(self.rewind in ("epoch", "init", "none"), "pruner.rewind", "one of epoch, init, none", self.rewind)

    def start_weights(self, base: BaseWeights) -> State:
        return {"epoch": base.rewind, "init": base.init, "none": base.final}[self.rewind]

    def prune(self, net, base, train):
        net.load_state_dict(base.final)
        mask = Mask.from_scores(magnitude_scores(net), self.sparsity, layerwise=self.layerwise)
        return train(self.start_weights(base), mask), mask
