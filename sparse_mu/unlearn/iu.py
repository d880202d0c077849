"""IU: influence unlearning, one Newton-like step with a WoodFisher inverse-Hessian estimate."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import nn

from sparse_mu.errors import check
from sparse_mu.unlearn.base import OneShot, UnlearnTask
from sparse_mu.unlearn.layer_grads import grad_dots
from sparse_mu.unlearn.per_sample import Grads, flatten, per_sample_grads, summed_grad


class InfluenceUnlearning(OneShot):
    """theta += alpha * H^-1 v with v = g_f / N - n_f / (N n_r) * g_r (the paper's Prop. 1,
    weights normalised), g_f and g_r the summed cross-entropy gradients over D_f and D_r (eval
    mode), n_f, n_r their sizes and N = n_f + n_r.

    H^-1 v is the published WoodFisher recursion over m = `samples` single retain samples, drawn
    at random from the job seed (the published code takes the first 1000): k = v, o = g_1; for
    every next g: t = o.g; k -= (k.g / (m + t)) o; o -= (t / (m + t)) o. The recursion is
    sequential; it needs each g only through g.g_1 and g.v, computed batched from layer hooks
    (`layer_grads.grad_dots`, forward-mode AD for other layers; see `inverse_hessian_product`).
    Gradients and the update are restricted to the unpruned coordinates. `per_sample_grads`
    (after the pass): m, the samples whose gradients entered.
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, alpha: float = 10.0, samples: int = 1000,
                 batch_size: int = 256, node: str = "unlearner", **one_shot):
        super().__init__(net, task, batch_size=batch_size, node=node, **one_shot)
        check(alpha >= 0, f"{node}.alpha", ">= 0", alpha)
        check(samples >= 1, f"{node}.samples", "an integer >= 1", samples)
        self.require_forget()
        self.alpha, self.samples = alpha, samples
        self.sums: dict[str, torch.Tensor] = {}
        self.counts = {"retain": 0, "forget": 0}
        self.per_sample_grads = 0

    def train_dataloader(self):
        # one pass over both sets; "max_size" gives None for the shorter one once it is exhausted
        return CombinedLoader({part: self.loader(part, train=False) for part in ("retain", "forget")},
                              mode="max_size")

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.sums, self.counts = {}, {"retain": 0, "forget": 0}

    def training_step(self, batch, batch_idx):
        keep = self.keep()
        for part, b in batch.items():
            if b is None:
                continue
            x, y, _ = b
            g = torch.cat([t.reshape(-1) for t in summed_grad(self.net, x, y, keep, chunk_size=self.chunk).values()])
            self.sums[part] = self.sums[part] + g if part in self.sums else g
            self.counts[part] += len(x)

    def recursion_samples(self) -> torch.Tensor:
        """The m retain samples feeding the recursion, in order (seeded by the job seed)."""
        retain = self.indices("retain")
        g = torch.Generator().manual_seed(self.seed)
        return retain[torch.randperm(len(retain), generator=g)[: self.samples]]

    @torch.no_grad()
    def inverse_hessian_product(self, v: torch.Tensor) -> torch.Tensor:
        """The WoodFisher recursion applied to v (see the class docstring).

        o only ever shrinks, so o = c g_1 and k = v - a g_1 for scalars c and a; the recursion
        needs only g_j . g_1 and g_j . v of every later sample j (`sample_dots`), and runs on
        those two numbers per sample, in order, exactly as on the vectors."""
        picked = self.recursion_samples()
        m = len(picked)
        x, y, _ = next(iter(self.task.data.loader(picked[:1], batch_size=1, train=False, device=self.device)))
        first = summed_grad(self.net, x, y, self.keep())
        g1 = torch.cat([t.reshape(-1) for t in first.values()])
        self.per_sample_grads = m
        if m == 1:
            return v.clone()
        dots = self.sample_dots(picked[1:], [first, self.unflatten(v)]).double().tolist()
        a, c = 0.0, 1.0
        for d1, dv in zip(*dots, strict=True):
            t = c * d1  # o . g
            a += (dv - a * d1) / (m + t) * c  # k -= (k . g) / (m + t) o
            c -= t / (m + t) * c  # o -= t / (m + t) o
        return v - a * g1

    def unflatten(self, flat: torch.Tensor) -> Grads:
        """A flat vector over the trainable parameters as {name: tensor}."""
        out, start = {}, 0
        for name, p in self.net.named_parameters():
            if p.requires_grad:
                out[name] = flat[start:start + p.numel()].view_as(p)
                start += p.numel()
        return out

    def sample_dots(self, picked: torch.Tensor, directions: list[Grads]) -> torch.Tensor:
        """[len(directions), len(picked)]: the masked gradient of each sample's cross-entropy
        dotted with each direction (directions already zero on pruned coordinates), from layer hooks
        or forward-mode AD (`layer_grads.grad_dots`), or from vmapped per-sample gradients if a
        layer has no forward-mode rule."""
        rows = []
        for x, y, _ in self.task.data.loader(picked, batch_size=self.batch_size, train=False, device=self.device):
            try:
                rows.append(grad_dots(self.net, x, y, directions, chunk_size=self.chunk))
            except (NotImplementedError, RuntimeError):
                flat = torch.stack([torch.cat([t.reshape(-1) for t in u.values()]) for u in directions])
                for grads in per_sample_grads(self.net, x, y, chunk_size=self.chunk, keep=self.keep()):
                    rows.append(flat @ flatten(grads).T)
        return torch.cat(rows, dim=1)

    @torch.no_grad()
    def on_train_epoch_end(self) -> None:
        n_f, n_r = self.counts["forget"], self.counts["retain"]
        n = n_f + n_r
        v = self.sums["forget"] / n - (n_f / (n * n_r)) * self.sums["retain"]
        step = self.alpha * self.inverse_hessian_product(v)
        keep, start = self.keep() or {}, 0
        for name, p in self.net.named_parameters():
            if not p.requires_grad:
                continue
            delta = step[start:start + p.numel()].view_as(p)
            start += p.numel()
            p.add_(delta * keep[name] if name in keep else delta)
        self.log("unlearn/update_norm", step.norm(), on_step=False, on_epoch=True)

    def settings(self) -> dict:
        return {**super().settings(), "samples_used": min(self.samples, len(self.indices("retain")))}
