"""SCRUB: a student moves away from the original model on D_f and stays close to it on D_r."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from torch import nn

from sparse_mu.errors import check
from sparse_mu.unlearn.base import Unlearner, UnlearnTask


class SCRUB(Unlearner):
    """Teacher: a frozen copy of the original model; student: the net.

    Every step, on a D_r batch: `ce_weight` * CE + `kd_weight` * KL(teacher || student) at
    `temperature` (SCRUB's gamma, alpha and kd_T); in the first `forget_epochs` epochs (SCRUB's
    msteps) also minus KL(teacher || student) on a D_f batch of `forget_batch_size`, for one pass
    over D_f per epoch. SCRUB alternates a pass of max-steps over D_f with a pass of min-steps
    over D_r; here a max-step and a min-step share one optimiser step on the summed loss, with
    the same number of each per epoch.
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, kd_weight: float = 0.001, ce_weight: float = 0.99,
                 temperature: float = 4.0, forget_epochs: int = 2, forget_batch_size: int = 32,
                 node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        check(kd_weight >= 0, f"{node}.kd_weight", ">= 0", kd_weight)
        check(ce_weight >= 0, f"{node}.ce_weight", ">= 0", ce_weight)
        check(temperature > 0, f"{node}.temperature", "> 0", temperature)
        check(0 <= forget_epochs <= self.epochs, f"{node}.forget_epochs", f"in [0, {self.epochs}] ({node}.epochs)",
              forget_epochs)
        check(forget_batch_size >= 1, f"{node}.forget_batch_size", "an integer >= 1", forget_batch_size)
        self.require_forget()
        self.kd_weight, self.ce_weight, self.temperature = kd_weight, ce_weight, temperature
        self.forget_epochs, self.forget_batch_size = forget_epochs, forget_batch_size
        self.teacher = copy.deepcopy(net).requires_grad_(False)

    def on_train_epoch_start(self) -> None:
        self.teacher.eval()

    def train_dataloader(self):
        return CombinedLoader({"retain": self.loader("retain"),
                               "forget": self.loader("forget", batch_size=self.forget_batch_size)}, mode="max_size")

    def kl(self, x: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
        """KL(teacher || student) on batch x at the temperature, scaled by T^2 (Hinton et al.)."""
        t = self.temperature
        with torch.no_grad():
            target = F.softmax(self.teacher(x) / t, dim=-1)
        return F.kl_div(F.log_softmax(student / t, dim=-1), target, reduction="batchmean") * t * t

    def training_step(self, batch, batch_idx):
        terms = []
        if batch["retain"] is not None:
            x, y, _ = batch["retain"]
            student = self.net(x)
            retain_loss = F.cross_entropy(student, y, label_smoothing=self.label_smoothing)
            self.log("unlearn/retain_loss", retain_loss.detach(), on_epoch=True, prog_bar=True, batch_size=len(x))
            terms.append(self.ce_weight * retain_loss + self.kd_weight * self.kl(x, student))
        if batch["forget"] is not None and self.current_epoch < self.forget_epochs:
            x = batch["forget"][0]
            forget_kl = self.kl(x, self.net(x))
            self.log("unlearn/forget_kl", forget_kl.detach(), on_epoch=True, prog_bar=True, batch_size=len(x))
            terms.append(-forget_kl)
        # a step with nothing to learn from (D_f longer than D_r, after the max epochs) is skipped
        return sum(terms) if terms else None
