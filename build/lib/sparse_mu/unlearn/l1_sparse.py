"""l1-sparse: the paper's sparsity-aware unlearning (its code's FT_prune / FT_l1)."""

from __future__ import annotations

import torch
from torch import nn

from sparse_mu.callbacks.l1 import L1Schedule
from sparse_mu.errors import check
from sparse_mu.training import SCHEDULES
from sparse_mu.unlearn.base import UnlearnTask
from sparse_mu.unlearn.ft import FineTune


class L1Sparse(FineTune):
    """FT on D_r plus gamma_e * ||theta||_1, gamma_e from the `L1Schedule` callback.

    The L1 norm runs over every parameter of the net (BatchNorm, biases and the head
    included), as in the published code. `gamma` and `schedule` are the L1 settings (the paper's
    gamma and scheduler); the learning-rate schedule is therefore `lr_schedule` (with `lr_gamma`
    and `milestones` for `step`).
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, gamma: float = 5e-4,
                 schedule: str = "linear_decay", lr_schedule: str = "constant", lr_gamma: float = 0.1,
                 node: str = "unlearner", **loop):
        check(lr_schedule in SCHEDULES, f"{node}.lr_schedule", f"one of {', '.join(SCHEDULES)}", lr_schedule)
        l1 = L1Schedule(gamma, schedule, node)
        super().__init__(net, task, schedule=lr_schedule, gamma=lr_gamma, node=node, **loop)
        self.l1 = l1

    def configure_callbacks(self):
        return [self.l1]

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        retain_loss = self.cross_entropy(x, y)
        l1_norm = torch.stack([p.abs().sum() for p in self.net.parameters()]).sum()
        self.log_loss("unlearn/retain_loss", retain_loss)
        self.log("unlearn/l1_norm", l1_norm.detach(), on_step=False, on_epoch=True)
        return retain_loss + self.l1.current * l1_norm
