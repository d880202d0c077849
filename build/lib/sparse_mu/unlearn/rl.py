"""RL: random labels on the forget set, trained together with the retain set."""

from __future__ import annotations

import torch
from torch import nn

from sparse_mu.unlearn.base import Unlearner, UnlearnTask


class RandomLabels(Unlearner):
    """Cross-entropy on D = D_r + D_f, shuffled together, where every forget sample carries a
    fixed random wrong label (uniform over the other classes, drawn once from the job seed).

    As SalUn's RL: forget and retain samples share batches in proportion to their sizes. (The
    paper's repository trains on D_f alone with labels from randint(0, 9), which never picks
    class 9 and may pick the true label.)
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, **loop):
        super().__init__(net, task, **loop)
        self.require_forget()
        forget, num_classes = task.forget.forget, task.data.num_classes
        shift = torch.randint(1, num_classes, (len(forget),), generator=torch.Generator().manual_seed(self.seed))
        labels = torch.full_like(task.data.y, -1)
        labels[forget] = (task.data.y[forget] + shift) % num_classes
        # indexed by dataset index; -1 keeps the true label
        self.register_buffer("relabel", labels, persistent=False)

    def train_dataloader(self):
        return self.loader("all")

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        new = self.relabel[idx]
        loss = self.cross_entropy(x, torch.where(new >= 0, new, y))
        self.log_loss("unlearn/loss", loss)
        return loss
