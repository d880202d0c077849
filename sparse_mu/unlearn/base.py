"""The shared base of every unlearning method, and what the pipeline hands it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparse_mu.data import ForgetSet, ImageData, TensorLoader
from sparse_mu.pruning import BaseWeights, Mask
from sparse_mu.training import TrainLoop


@dataclass
class UnlearnTask:
    """Everything an unlearner may use: the data, D_f / D_r, the mask (None if dense) and the
    base model's weights (Retrain starts from its initialisation)."""

    data: ImageData
    forget: ForgetSet
    mask: Mask | None
    base: BaseWeights


class Unlearner(TrainLoop):
    """An unlearning method as a Lightning training loop over the forget and/or retain set.

    Subclasses define `train_dataloader` (usually via `loader`) and `training_step`. One-shot
    methods are loops too: their epoch accumulates statistics, the update happens at its end.
    The pipeline attaches the mask-enforcing callback whenever a mask exists.
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, **loop):
        super().__init__(net, **loop)
        self.task = task

    def indices(self, part: str) -> torch.Tensor:
        return {"retain": self.task.forget.retain, "forget": self.task.forget.forget}[part]

    def loader(self, part: str, *, train: bool = True, batch_size: int | None = None) -> TensorLoader:
        """Batches of D_r ("retain") or D_f ("forget"); `train=False` gives eval transforms."""
        return self.task.data.loader(self.indices(part), batch_size=batch_size or self.batch_size,
                                     train=train, seed=self.seed, device=self.device)

    def settings(self) -> dict:
        """Hyperparameters recorded in metrics.json (everything but the runtime objects)."""
        unused = {"node"} | ({"rho", "adaptive"} if self.optimizer_name != "sam" else set())
        return {k: v for k, v in self.hparams.items() if k not in unused}
