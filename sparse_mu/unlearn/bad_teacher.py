"""Bad Teacher (Chundawat et al., AAAI 2023): distil from a competent and an incompetent teacher."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu.errors import check
from sparse_mu.unlearn.base import Unlearner, UnlearnTask


def reset_parameters(modules, seed: int) -> None:
    """Draw the parameters of `modules` afresh (each one's own `reset_parameters`), seeded,
    without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in modules:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


def reinitialised(net: nn.Module, seed: int) -> nn.Module:
    """A copy of `net` with every layer's parameters drawn afresh."""
    fresh = copy.deepcopy(net)
    reset_parameters(fresh.modules(), seed)
    return fresh


class BadTeacher(Unlearner):
    """The student (the net, starting from the original model) is trained on D_f plus a random
    `retain_fraction` of D_r to match, at `temperature`, the competent teacher (a frozen copy
    of the original model) on retain samples and the incompetent teacher (a randomly
    initialised model of the same architecture) on forget samples:
    KL(target || student) with target = softmax(incompetent / T) on D_f, softmax(competent / T)
    on D_r. The published defaults: one epoch, Adam at lr 1e-4, T = 1, 30 % of D_r.
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, retain_fraction: float = 0.3,
                 temperature: float = 1.0, node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        check(0 <= retain_fraction <= 1, f"{node}.retain_fraction", "a fraction in [0, 1]", retain_fraction)
        check(temperature > 0, f"{node}.temperature", "> 0", temperature)
        self.require_forget()
        self.retain_fraction, self.temperature = retain_fraction, temperature
        self.competent = copy.deepcopy(net).requires_grad_(False)
        self.incompetent = reinitialised(net, self.seed + 1).requires_grad_(False)
        retain = task.forget.retain
        picked = torch.randperm(len(retain), generator=torch.Generator().manual_seed(self.seed))
        self.samples = torch.cat([task.forget.forget, retain[picked[:round(retain_fraction * len(retain))]]])
        is_forget = torch.zeros_like(task.data.y, dtype=torch.bool)
        is_forget[task.forget.forget] = True
        self.register_buffer("is_forget", is_forget, persistent=False)  # indexed by dataset index

    def on_train_epoch_start(self) -> None:
        self.competent.eval()
        self.incompetent.eval()

    def train_dataloader(self):
        return self.task.data.loader(self.samples, batch_size=self.batch_size, train=True, seed=self.seed,
                                     device=self.device)

    def target(self, x: torch.Tensor, forget: torch.Tensor) -> torch.Tensor:
        """The teachers' softened outputs: the incompetent one's where `forget`, else the competent one's."""
        t = self.temperature
        with torch.no_grad():
            good, bad = F.softmax(self.competent(x) / t, -1), F.softmax(self.incompetent(x) / t, -1)
        return torch.where(forget[:, None], bad, good)

    def training_step(self, batch, batch_idx):
        x, _, idx = batch
        target = self.target(x, self.is_forget[idx])
        loss = F.kl_div(F.log_softmax(self.net(x) / self.temperature, -1), target, reduction="batchmean")
        self.log_loss("unlearn/kl", loss)
        return loss
