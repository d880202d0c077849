"""RL: random labels on the forget set, trained with the retain set."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from sparse_mu.data import TensorLoader
from sparse_mu.errors import check
from sparse_mu.unlearn.base import Unlearner, UnlearnTask

ORDERS = ("forget_then_retain", "joint")
RELABELS = ("per_epoch", "fixed")


class Passes:
    """Loaders iterated one after the other: an epoch is a pass over each in turn.

    Lightning's fit loop refuses CombinedLoader's `sequential` mode; this is that mode. It
    forwards `set_epoch` (Lightning calls it on `.sampler`) so every pass reshuffles per epoch.
    """

    def __init__(self, *loaders: TensorLoader):
        self.loaders, self.sampler = loaders, self

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    def __iter__(self):
        return itertools.chain.from_iterable(self.loaders)


class RandomLabels(Unlearner):
    """Cross-entropy on D_r and on D_f with random labels, as the SalUn code's RL.

    `relabel`: `per_epoch` (default, as published) draws every forget sample's label uniformly
    over all classes at the start of each epoch (it may equal the true label), from (seed,
    epoch), so a resumed run draws what an uninterrupted one does; `fixed` draws one label per
    sample once, uniformly over the other classes (always wrong).
    `order`: `forget_then_retain` (default; the published code on CIFAR-10 and SVHN) makes each
    epoch a pass over D_f, then a pass over D_r; `joint` (its CIFAR-100 / TinyImageNet branch,
    and the sparse-unlearning code's RL) shuffles D_f and D_r together into one stream.
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, order: str = "forget_then_retain",
                 relabel: str = "per_epoch", node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        check(order in ORDERS, f"{node}.order", f"one of {', '.join(ORDERS)}", order)
        check(relabel in RELABELS, f"{node}.relabel", f"one of {', '.join(RELABELS)}", relabel)
        self.require_forget()
        self.order, self.relabel_mode = order, relabel
        # indexed by dataset index; -1 keeps the true label
        self.register_buffer("relabel", torch.full_like(task.data.y, -1), persistent=False)
        if relabel == "fixed":
            forget, num_classes = task.forget.forget, task.data.num_classes
            shift = torch.randint(1, num_classes, (len(forget),), generator=torch.Generator().manual_seed(self.seed))
            self.relabel[forget] = (task.data.y[forget] + shift) % num_classes
        else:
            self.draw_labels(0)

    def draw_labels(self, epoch: int) -> None:
        """The forget set's labels for `epoch` (relabel: per_epoch), uniform over all classes."""
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        forget = self.task.forget.forget
        labels = torch.randint(0, self.task.data.num_classes, (len(forget),), generator=torch.Generator().manual_seed(seed))
        self.relabel[forget.to(self.relabel.device)] = labels.to(self.relabel.device)

    def on_train_epoch_start(self) -> None:
        if self.relabel_mode == "per_epoch":
            self.draw_labels(self.current_epoch)

    def train_dataloader(self):
        if self.order == "joint":
            return self.loader("all")
        return Passes(self.loader("forget"), self.loader("retain"))

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        new = self.relabel[idx]
        loss = self.cross_entropy(x, torch.where(new >= 0, new, y))
        self.log_loss("unlearn/loss", loss)
        return loss
