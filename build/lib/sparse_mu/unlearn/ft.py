"""FT: fine-tune the original model on D_r (catastrophic forgetting of D_f)."""

from __future__ import annotations

from sparse_mu.unlearn.base import Unlearner


class FineTune(Unlearner):
    """Cross-entropy on D_r for a few epochs at a small learning rate."""

    def train_dataloader(self):
        return self.loader("retain")

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        loss = self.cross_entropy(x, y)
        self.log_loss("unlearn/retain_loss", loss)
        return loss
