"""NegGrad+: descend on the retain set while ascending on the forget set."""

from __future__ import annotations

from torch import nn

from sparse_mu.errors import check
from sparse_mu.unlearn.base import Unlearner, UnlearnTask


class NegGradPlus(Unlearner):
    """CE on a D_r batch minus `beta` * CE on a D_f batch, every step; an epoch is one pass
    over D_r, cycling through D_f (Lightning's CombinedLoader, max_size_cycle)."""

    def __init__(self, net: nn.Module, task: UnlearnTask, *, beta: float = 0.05, node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        check(beta >= 0, f"{node}.beta", ">= 0", beta)
        self.require_forget()
        self.beta = beta

    def train_dataloader(self):
        return {"retain": self.loader("retain"), "forget": self.loader("forget")}

    def training_step(self, batch, batch_idx):
        (xr, yr, _), (xf, yf, _) = batch["retain"], batch["forget"]
        retain_loss, forget_loss = self.cross_entropy(xr, yr), self.cross_entropy(xf, yf)
        self.log_loss("unlearn/retain_loss", retain_loss)
        self.log_loss("unlearn/forget_loss", forget_loss)
        return retain_loss - self.beta * forget_loss
