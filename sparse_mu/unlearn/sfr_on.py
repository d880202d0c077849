"""SFR-on (Huang et al., NeurIPS 2024): forget steps of weighted gradient ascent on D_f,
restricted to a forget/remain saliency mask, interleaved with descent steps on D_r."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu.errors import check
from sparse_mu.unlearn.base import Unlearner, UnlearnTask
from sparse_mu.unlearn.per_sample import Grads, summed_grad
from sparse_mu.unlearn.salun import SaliencyMasked

ALPHA_SCHEDULES = ("cosine", "linear", "constant")


def adaptive_weights(losses: torch.Tensor, lambd: float) -> torch.Tensor:
    """Per-sample weights of the forget loss, summing to 1: proportional to 1 / l_i^lambd, so
    samples already forgotten (large loss l_i) are pushed less. lambd = 0: uniform."""
    c = 1.0 / (losses.detach().clamp_min(0) ** lambd + 1e-15)
    return c / c.sum()


def fisher_ratio_mask(forget: Grads, remain: Grads, keep: Grads | None, threshold: float) -> Grads:
    """1 where (F_f + 1e-15) / (F_r + 1e-15) >= threshold, 0 elsewhere; pruned coordinates
    (`keep` = 0), where both statistics are 0 and the ratio would be 1, are never salient."""
    out = {}
    for k, f in forget.items():
        m = ((f + 1e-15) / (remain[k] + 1e-15) >= threshold).to(f.dtype)
        out[k] = m * keep[k] if keep is not None and k in keep else m
    return out


class _Sampler:
    """Forwards Lightning's `set_epoch` to the samplers of both loaders."""

    def __init__(self, *loaders):
        self.loaders = loaders

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.sampler.set_epoch(epoch)


class Interleaved:
    """One epoch: a pass over the retain loader, preceded every `every` retain batches (the
    0th, `every`th, ...) by the next forget batch, cycling through the forget loader. Yields
    ("forget" | "retain", batch)."""

    def __init__(self, retain, forget, every: int):
        self.retain, self.forget, self.every = retain, forget, every
        self.sampler = _Sampler(retain, forget)

    def __len__(self) -> int:
        n = len(self.retain)
        return n + math.ceil(n / self.every)

    def __iter__(self):
        forget = iter(self.forget)
        for i, b in enumerate(self.retain):
            if i % self.every == 0:
                try:
                    f = next(forget)
                except StopIteration:
                    forget = iter(self.forget)
                    f = next(forget)
                yield "forget", f
            yield "retain", b


class SFRon(SaliencyMasked, Unlearner):
    """Every optimiser step is one of two kinds, sharing the optimiser (momentum, weight
    decay, LR schedule):

    - forget step (before every `forget_freq`-th retain step): loss `-alpha_t * sum_i w_i l_i`
      on a D_f batch, l_i the per-sample cross-entropy, w_i = `adaptive_weights` (`adaptive:
      false`: uniform, plain gradient ascent); alpha_t = `forget_alpha` decayed over the run's
      optimiser steps (`alpha_schedule`). Its gradient is zeroed outside the saliency mask, then
      clipped to global norm `max_norm`.
    - retain step: mean cross-entropy on a D_r batch, no mask, no clipping.

    Saliency mask (`use_mask`), once before the first step on the original model (eval mode,
    eval transforms): F_f, F_r = the mean over batches of the squared gradient of the batch-mean
    cross-entropy on D_f, D_r; salient where F_f / F_r >= `threshold` (`fisher_ratio_mask`).
    Saved in the checkpoint, like SalUn's. An epoch is one pass over D_r.
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, forget_alpha: float = 25.0, forget_freq: int = 5,
                 lambd: float = 0.5, adaptive: bool = True, use_mask: bool = True, threshold: float = 1.0,
                 max_norm: float | None = 7.0, alpha_schedule: str = "cosine", forget_batch_size: int | None = None,
                 node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        check(forget_alpha >= 0, f"{node}.forget_alpha", ">= 0", forget_alpha)
        check(isinstance(forget_freq, int) and forget_freq >= 1, f"{node}.forget_freq", "an integer >= 1",
              forget_freq)
        check(lambd >= 0, f"{node}.lambd", ">= 0", lambd)
        check(threshold > 0, f"{node}.threshold", "> 0", threshold)
        check(max_norm is None or max_norm > 0, f"{node}.max_norm", "null (no clipping) or > 0", max_norm)
        check(alpha_schedule in ALPHA_SCHEDULES, f"{node}.alpha_schedule", f"one of {', '.join(ALPHA_SCHEDULES)}",
              alpha_schedule)
        check(forget_batch_size is None or forget_batch_size >= 1, f"{node}.forget_batch_size",
              "null (unlearner.batch_size) or an integer >= 1", forget_batch_size)
        self.require_forget()
        self.forget_alpha, self.forget_freq, self.lambd, self.adaptive = forget_alpha, forget_freq, lambd, adaptive
        self.use_mask, self.threshold, self.max_norm = use_mask, threshold, max_norm
        self.alpha_schedule, self.forget_batch_size = alpha_schedule, forget_batch_size
        self.saliency: Grads = {}
        self._forget_step = False
        self._total_steps = 1

    def train_dataloader(self):
        forget = self.loader("forget", batch_size=self.forget_batch_size or self.batch_size)
        return Interleaved(self.loader("retain"), forget, self.forget_freq)

    def alpha(self, step: int) -> float:
        """The forget weight at optimiser step `step` of `self._total_steps`."""
        t = min(step / self._total_steps, 1.0)
        if self.alpha_schedule == "cosine":
            return self.forget_alpha * (1 + math.cos(math.pi * t)) / 2
        if self.alpha_schedule == "linear":
            return self.forget_alpha * (1 - t)
        return self.forget_alpha

    def _fisher(self, part: str, keep: Grads | None) -> Grads:
        total, batches = {}, 0
        for x, y, _ in self.loader(part, train=False):
            for name, g in summed_grad(self.net, x, y, keep).items():
                sq = (g / len(x)) ** 2
                total[name] = total[name] + sq if name in total else sq
            batches += 1
        return {k: v / batches for k, v in total.items()}

    def on_train_start(self) -> None:
        super().on_train_start()
        self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        if self.use_mask:
            self.ready_saliency()

    def saliency_of(self, keep: Grads | None) -> Grads:
        return fisher_ratio_mask(self._fisher("forget", keep), self._fisher("retain", keep), keep, self.threshold)

    def training_step(self, batch, batch_idx):
        kind, (x, y, _) = batch
        self._forget_step = kind == "forget"
        if not self._forget_step:
            loss = self.cross_entropy(x, y)
            self.log_loss("unlearn/retain_loss", loss)
            return loss
        losses = F.cross_entropy(self.net(x), y, reduction="none")
        forget_loss = (adaptive_weights(losses, self.lambd) * losses).sum() if self.adaptive else losses.mean()
        self.log_loss("unlearn/forget_loss", forget_loss)
        return -self.alpha(self.trainer.global_step) * forget_loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if not self._forget_step:
            return
        self.mask_gradients()
        if self.max_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.net.parameters() if p.grad is not None], self.max_norm)
