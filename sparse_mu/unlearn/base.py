"""The shared base of every unlearning method, and what the pipeline hands it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparse_mu.data import ForgetSet, ImageData, TensorLoader
from sparse_mu.errors import check
from sparse_mu.pruning import BaseWeights, Mask
from sparse_mu.training import TrainLoop
from sparse_mu.unlearn.per_sample import Grads, chunk_size_for, keep_masks


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

    def __init__(self, net: nn.Module, task: UnlearnTask, *, budget: float | None = None, **loop):
        super().__init__(net, **loop)
        node = loop.get("node", "unlearner")
        check(budget is None or (isinstance(budget, (int, float)) and budget > 0), f"{node}.budget",
              "null (run `epochs`) or a fraction of the Retrain reference's optimiser steps > 0, e.g. 0.1",
              budget)
        self.task = task
        # a fraction of Retrain's steps; the pipeline derives `epochs` (and `max_steps`) from it
        self.budget = budget
        self.max_steps: int | None = None

    def on_train_batch_start(self, batch, batch_idx):
        if self.max_steps is not None and self.trainer.global_step >= self.max_steps:
            return -1  # the budget is spent: Lightning ends the epoch (the only one) here
        return None

    def indices(self, part: str) -> torch.Tensor:
        """Dataset indices of "retain" (D_r), "forget" (D_f) or "all" (D = D_r + D_f)."""
        return {"retain": self.task.forget.retain, "forget": self.task.forget.forget,
                "all": self.task.data.train}[part]

    def loader(self, part: str, *, train: bool = True, batch_size: int | None = None) -> TensorLoader:
        """Batches of D_r ("retain"), D_f ("forget") or D ("all"); `train=False` gives eval transforms."""
        return self.task.data.loader(self.indices(part), batch_size=batch_size or self.batch_size,
                                     train=train, seed=self.seed, device=self.device)

    def require_forget(self) -> None:
        """Raise ConfigError if D_f is empty: the method's objective needs forget samples."""
        n = len(self.task.forget.forget)
        check(n > 0, "forget", f"a non-empty forget set ({type(self).__name__} works on D_f)",
              f"{n} samples")

    def settings(self) -> dict:
        """Hyperparameters recorded in metrics.json (everything but the runtime objects)."""
        unused = {"node"} | ({"rho", "adaptive"} if self.optimizer_name != "sam" else set())
        return {k: v for k, v in self.hparams.items() if k not in unused}


# TrainLoop settings that mean nothing to a method without an optimiser.
_OPTIMISER_KEYS = ("budget", "lr", "momentum", "weight_decay", "optimizer", "schedule", "milestones", "gamma",
                   "warmup_epochs", "label_smoothing")


class OneShot(Unlearner):
    """A method whose single epoch only accumulates statistics and whose update happens at the
    epoch's end (`on_train_epoch_end`).

    The net is in eval mode for the whole pass (BatchNorm uses its running statistics and is
    not updated), loaders use eval transforms, and no optimiser exists, so nothing but the
    final update moves a weight. Per-sample gradients are taken `chunk_size` samples at a time,
    or as many as fit in `memory_mb` (see `per_sample.chunk_size_for`).
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, batch_size: int, epochs: int = 1,
                 chunk_size: int | None = None, memory_mb: float = 1024.0, seed: int = 0,
                 node: str = "unlearner", budget: None = None):
        check(epochs == 1, f"{node}.epochs", "1 (a one-shot method makes one pass over the data)", epochs)
        check(budget is None, f"{node}.budget", "null (a one-shot method takes no optimiser steps)", budget)
        # lr is a required TrainLoop setting; no optimiser uses it, and settings() leaves it out.
        super().__init__(net, task, epochs=1, batch_size=batch_size, lr=1.0, seed=seed, node=node)
        check(chunk_size is None or chunk_size >= 1, f"{node}.chunk_size",
              "null (derived from memory_mb) or an integer >= 1", chunk_size)
        check(memory_mb > 0, f"{node}.memory_mb", "> 0", memory_mb)
        n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        check(n_params > 0, "arch", f"a model with trainable parameters for {type(self).__name__} to perturb",
              f"{type(net).__name__} with none")
        self.chunk_size, self.memory_mb = chunk_size, memory_mb
        self.automatic_optimization = False

    def configure_optimizers(self):
        return []  # the update is computed, never stepped

    def on_train_epoch_start(self) -> None:
        self.net.eval()

    @property
    def chunk(self) -> int:
        """Samples per vectorised per-sample-gradient call."""
        return self.chunk_size or chunk_size_for(self.net, self.memory_mb)

    def keep(self) -> Grads | None:
        """The mask as float tensors beside the weights (None when dense)."""
        return keep_masks(self.net, self.task.mask)

    def noise_generator(self) -> torch.Generator:
        """Randomness of the update, from the job seed."""
        return torch.Generator(self.device).manual_seed(self.seed)

    def settings(self) -> dict:
        return {k: v for k, v in super().settings().items() if k not in _OPTIMISER_KEYS}
