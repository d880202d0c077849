"""GA: gradient ascent on the forget set."""

from __future__ import annotations

from torch import nn

from sparse_mu.unlearn.base import Unlearner, UnlearnTask


class GradientAscent(Unlearner):
    """Minus cross-entropy on D_f (train transforms), a few epochs at a small learning rate.

    Nothing anchors the model to D_r, so RA falls quickly; the paper's CIFAR-10 class-wise
    setting is 5 epochs at lr 1e-4.
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, **loop):
        super().__init__(net, task, **loop)
        self.require_forget()

    def train_dataloader(self):
        return self.loader("forget")

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        forget_loss = self.cross_entropy(x, y)
        self.log_loss("unlearn/forget_loss", forget_loss)
        return -forget_loss
