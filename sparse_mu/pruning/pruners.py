"""Pruners turn a base model into (weights, mask).

A pruner gets a scratch instance of the architecture, the base model's weights (at
initialisation, at the rewind epoch and at the end of training) and a `train(start_weights,
mask)` function; each call of `train` is one run of the base training profile with the mask
held. It returns the final weights and the mask (None for dense).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sparse_mu.errors import ConfigError, check
from sparse_mu.pruning.mask import Mask, prunable_weights

State = dict[str, torch.Tensor]
TrainFn = Callable[[State, Mask], State]


@dataclass
class BaseWeights:
    """The dense base model's weights at initialisation, at the rewind epoch and trained.

    `rewind` and `final` are None when the pruner asked for no trained base model.
    """

    init: State
    rewind: State | None
    final: State | None


class Pruner:
    """Interface: `prune(net, base, train) -> (weights, mask or None)`.

    `net` is a scratch instance of the architecture; `net.input_shape` is the data's
    (channels, height, width), for pruners that feed the net synthetic input. Pruners that read
    only `base.init` set `needs_trained_base = False` and the pipeline skips training the dense
    model for them.
    """

    sparsity: float = 0.0
    needs_trained_base: bool = True
    needs_data: bool = False  # True: `prune` also gets `data=(ImageData, indices of D)`

    def prune(self, net: nn.Module, base: BaseWeights, train: TrainFn) -> tuple[State, Mask | None]:
        raise NotImplementedError

    def validate(self, net: nn.Module) -> None:
        """Raise ConfigError if the pruner cannot work on `net`; run before anything trains."""

    def inputs(self) -> dict:
        """What the pruned model depends on beyond the pruner's config (for the cache key)."""
        return {}


def _check_sparsity(sparsity: float) -> None:
    check(sparsity is not None and 0 <= sparsity < 1, "pruner.sparsity", "a fraction in [0, 1)", sparsity)


@dataclass
class Dense(Pruner):
    """No pruning: the base model as trained."""

    sparsity: float = 0.0

    def __post_init__(self):
        check(self.sparsity == 0, "pruner.sparsity", "0 for pruner=dense (pick pruner=omp to prune)", self.sparsity)

    def prune(self, net, base, train):
        return base.final, None


def magnitude_scores(net: nn.Module, mask: Mask | None = None) -> dict[str, torch.Tensor]:
    """|w| of every prunable weight; -1 where `mask` already prunes, so those stay pruned."""
    scores = {k: w.detach().abs() for k, w in prunable_weights(net).items()}
    if mask is not None:
        scores = {k: s.masked_fill(~mask.tensors[k].to(s.device), -1.0) for k, s in scores.items()}
    return scores


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

    def targets(self) -> list[float]:
        """The overall sparsity after each round of prune-rewind-retrain."""
        return [self.sparsity]

    def start_weights(self, base: BaseWeights, trained: State) -> State:
        """Where each retraining starts; `trained` is the last round's (or the dense) model."""
        return {"epoch": base.rewind, "init": base.init, "none": trained}[self.rewind]

    def prune(self, net, base, train):
        state, mask = base.final, None
        for target in self.targets():
            net.load_state_dict(state)
            mask = Mask.from_scores(magnitude_scores(net, mask), target, layerwise=self.layerwise)
            state = train(self.start_weights(base, state), mask)
        return state, mask


@dataclass
class IMP(OMP):
    """Iterative magnitude pruning: `rounds` times {prune `rate` of the remaining weights by |w|
    (globally, or per layer), rewind, retrain}; pruned weights stay pruned.

    Set one of `sparsity` and `rounds`, the other follows. With `rounds: null` (the default) the
    rounds are as many as reach `sparsity` (95 % at rate 0.2: 14) and the last round prunes only
    what is left to reach it exactly. With `sparsity: null` the density after k rounds is
    (1 - rate)^k, the published code's `--pruning_times k --rate 0.2`.
    """

    sparsity: float | None = 0.95
    rounds: int | None = None
    rate: float = 0.2

    def __post_init__(self):
        check(isinstance(self.rate, (int, float)) and 0 < self.rate < 1, "pruner.rate", "in (0, 1)", self.rate)
        if (self.rounds is None) == (self.sparsity is None):
            raise ConfigError(
                "set exactly one of pruner.sparsity and pruner.rounds, the other follows from pruner.rate "
                f"(density (1 - rate)^rounds); got sparsity={self.sparsity!r}, rounds={self.rounds!r}. "
                "For a fixed number of rounds: pruner.rounds=K pruner.sparsity=null")
        if self.rounds is None:
            _check_sparsity(self.sparsity)
            # the tolerance keeps a sparsity of exactly 1 - (1 - rate)^k at k rounds, not k + 1
            self.rounds = max(1, math.ceil(math.log(1 - self.sparsity) / math.log(1 - self.rate) - 1e-9))
        else:
            check(isinstance(self.rounds, int) and self.rounds >= 1, "pruner.rounds", "an integer >= 1 or null", self.rounds)
            self.sparsity = 1 - (1 - self.rate) ** self.rounds
        super().__post_init__()

    def targets(self) -> list[float]:
        return [1 - (1 - self.rate) ** i for i in range(1, self.rounds)] + [self.sparsity]


@dataclass
class Random(OMP):
    """Random pruning: a seeded random mask with exactly `sparsity` of the prunable weights
    pruned (globally, or the same fraction per layer), then the same rewinding and retraining
    as OMP. `rewind: init` makes it pruning at initialisation: no dense model is trained.
    """

    seed: int = 0

    @property
    def needs_trained_base(self) -> bool:
        return self.rewind != "init"

    def prune(self, net, base, train):
        g = torch.Generator().manual_seed(self.seed)
        scores = {k: torch.rand(w.shape, generator=g) for k, w in prunable_weights(net).items()}
        mask = Mask.from_scores(scores, self.sparsity, layerwise=self.layerwise)
        return train(self.start_weights(base, base.final), mask), mask
