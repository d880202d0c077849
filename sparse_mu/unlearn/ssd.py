"""SSD: selective synaptic dampening (Foster et al., AAAI 2024), retrain-free."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from torch import nn

from sparse_mu.errors import check
from sparse_mu.unlearn.base import OneShot, UnlearnTask
from sparse_mu.unlearn.per_sample import Grads


class SelectiveSynapticDampening(OneShot):
    """Importance of each parameter = the mean over batches of the squared gradient of the
    batch-mean cross-entropy (the diagonal Fisher estimate of the published code), once over D
    and once over D_f. Parameters with importance_f > `alpha` * importance_D are multiplied by
    min(`lam` * importance_D / importance_f, 1); all others are left as they are.

    As published: batch gradients (not per-sample), D = the whole training set (D_r and D_f),
    every parameter (BatchNorm and biases included). Unlike the published code, the net is in
    eval mode and batches use eval transforms, as for FF and IU, so BatchNorm statistics are not
    updated by the pass. Pruned weights are zero and stay zero (a product).
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, alpha: float = 10.0, lam: float = 1.0,
                 batch_size: int = 64, node: str = "unlearner", **one_shot):
        super().__init__(net, task, batch_size=batch_size, node=node, **one_shot)
        check(alpha > 0, f"{node}.alpha", "> 0 (the selection threshold)", alpha)
        check(lam > 0, f"{node}.lam", "> 0 (the dampening constant)", lam)
        self.require_forget()
        self.alpha, self.lam = alpha, lam
        self.importance: dict[str, Grads] = {}
        self.batches: dict[str, int] = {}
        self.dampened = 0

    def train_dataloader(self):
        # one pass over both sets; "max_size" yields None for the shorter one once it ends
        return CombinedLoader({"all": self.loader("all", train=False),
                               "forget": self.loader("forget", train=False)}, mode="max_size")

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.importance, self.batches = {"all": {}, "forget": {}}, {"all": 0, "forget": 0}

    def training_step(self, batch, batch_idx):
        params = {k: p for k, p in self.net.named_parameters() if p.requires_grad}
        for part, b in batch.items():
            if b is None:
                continue
            x, y, _ = b
            grads = torch.autograd.grad(F.cross_entropy(self.net(x), y), list(params.values()))
            acc = self.importance[part]
            for name, g in zip(params, grads, strict=True):
                acc[name] = acc[name] + g.pow(2) if name in acc else g.pow(2)
            self.batches[part] += 1

    @torch.no_grad()
    def on_train_epoch_end(self) -> None:
        self.dampened = 0
        for name, p in self.net.named_parameters():
            if name not in self.importance["all"]:
                continue
            full = self.importance["all"][name] / self.batches["all"]
            forget = self.importance["forget"][name] / self.batches["forget"]
            selected = forget > self.alpha * full
            factor = (self.lam * full / forget).clamp(max=1.0)
            p.copy_(torch.where(selected, p * factor, p))
            self.dampened += int(selected.sum())
