"""FF: Fisher forgetting, noise shaped by the Fisher information of D_r.

Two variants, both faithful to the published code: `ff` (its per-sample `fisher`) and
`ff_batch` (its `fisher_new`, the one the README runs). Both: net in eval mode, statistics on
D_r with eval transforms, one pass, noise added at the end of the pass.
"""

from __future__ import annotations

import torch
from torch import nn

from sparse_mu.errors import check
from sparse_mu.pruning import classifier_head
from sparse_mu.unlearn.base import OneShot, UnlearnTask
from sparse_mu.unlearn.layer_grads import grad_square_sums
from sparse_mu.unlearn.per_sample import Grads, class_grads, log_likelihood, per_sample_grads

EPS = 1e-8


class FisherForgetting(OneShot):
    """`ff`: F = mean over D_r of (g_i + 1e-8)^2, g_i the per-sample gradient of log p(y_i|x_i)
    (vectorised); theta += min(sqrt(alpha / F), 1e-3) * N(0, I), the noise x10 on the
    classifier bias. Every parameter is perturbed (BatchNorm and biases included); pruned
    weights get no noise.

    F needs only sum_i g_i^2 and sum_i g_i: for Linear, Conv2d and BatchNorm layers they come
    in closed form from activations and output gradients (`layer_grads.grad_square_sums`);
    other nets get the per-sample gradients by vmap (`per_sample.per_sample_grads`).
    """

    variant = "per_sample"

    def __init__(self, net: nn.Module, task: UnlearnTask, *, alpha: float = 1e-6, batch_size: int = 256,
                 node: str = "unlearner", **one_shot):
        super().__init__(net, task, batch_size=batch_size, node=node, **one_shot)
        check(alpha >= 0, f"{node}.alpha", ">= 0", alpha)
        self.alpha = alpha
        self.stats: Grads = {}
        self.count = self.per_sample_grads = 0

    def train_dataloader(self):
        return self.loader("retain", train=False)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.stats, self.count, self.per_sample_grads = {}, 0, 0

    def _accumulate(self, name: str, value: torch.Tensor) -> None:
        self.stats[name] = self.stats[name] + value if name in self.stats else value

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        keep = self.keep()
        sums = grad_square_sums(self.net, x, y, chunk_size=self.chunk)
        if sums is None:  # a layer without a closed form: per-sample gradients by vmap
            for grads in per_sample_grads(self.net, x, y, chunk_size=self.chunk, loss=log_likelihood, keep=keep):
                for name, g in grads.items():
                    self._accumulate(name, (g + EPS).pow(2).sum(0))
        else:
            # sum_i (k g_i + e)^2 = k sum_i g_i^2 + 2 e k sum_i g_i + n e^2, k the 0/1 mask
            squares, totals = sums
            for name, square in squares.items():
                total = totals[name]
                if keep and name in keep:
                    square, total = square * keep[name], total * keep[name]
                self._accumulate(name, square + 2 * EPS * total + len(x) * EPS**2)
        self.count += len(x)
        self.per_sample_grads = self.count  # samples whose gradient entered F (for cost accounting)

    def new_value(self, name: str, param: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The perturbed value of parameter `name`, given standard normal `noise`."""
        std = (self.alpha / (self.stats[name] / self.count)).sqrt().clamp(max=1e-3)
        if name == f"{classifier_head(self.net)}.bias":
            std = std * 10
        return param + std * noise

    @torch.no_grad()
    def on_train_epoch_end(self) -> None:
        keep, gen = self.keep() or {}, self.noise_generator()
        moved = []
        for name, p in self.net.named_parameters():
            if name not in self.stats:
                continue
            noise = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
            new = self.new_value(name, p, noise)
            if name in keep:
                new = new * keep[name]
            moved.append((new - p).norm())
            p.copy_(new)
        self.log("unlearn/update_norm", torch.stack(moved).norm(), on_step=False, on_epoch=True)

    def settings(self) -> dict:
        return {**super().settings(), "variant": self.variant}


class FisherForgettingBatch(FisherForgetting):
    """`ff_batch`: per batch of 32 and per class y, acc += mean_batch p(y|x) * (gradient of the
    batch-mean cross-entropy toward y)^2, averaged over batches; var = alpha * min(1 / (acc +
    1e-8), 1e3) (1e2 for the classifier's weight and bias), averaged over input channels;
    classifier tensors and other 1-D tensors (BatchNorm, biases) var x10; theta += sqrt(var) *
    N(0, I).

    `class_surgery` (class-wise forgetting only): the forgotten class's classifier row and bias
    are set to 0 with var 1e-4 before the x10, as the published code does (which fires it in
    random forgetting too; we do not).
    """

    variant = "per_batch"

    def __init__(self, net: nn.Module, task: UnlearnTask, *, alpha: float = 1e-9, batch_size: int = 32,
                 class_surgery: bool = True, node: str = "unlearner", **one_shot):
        super().__init__(net, task, alpha=alpha, batch_size=batch_size, node=node, **one_shot)
        self.class_surgery = class_surgery

    def training_step(self, batch, batch_idx):
        x, _, _ = batch
        # the C gradients of one batch, `chunk` at a time: C is small, the chunk is a memory bound
        grads, prob = class_grads(self.net, x, chunk_size=self.chunk, keep=self.keep())
        weight = prob.mean(0)
        for name, g in grads.items():
            self._accumulate(name, torch.einsum("c,c...->...", weight, g.pow(2)))
        self.count += 1  # batches: the published code averages over batches

    def new_value(self, name: str, param: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        head = classifier_head(self.net)
        is_head = name in (f"{head}.weight", f"{head}.bias")
        var = (1.0 / (self.stats[name] / self.count + EPS)).clamp(max=1e2 if is_head else 1e3)
        var = self.alpha * var
        if param.ndim > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(param).clone()
        mean = param.clone()
        forgotten = self.task.forget.class_idx
        if is_head and self.class_surgery and forgotten is not None:
            mean[forgotten] = 0
            var[forgotten] = 1e-4
        if is_head or param.ndim == 1:
            var = var * 10
        return mean + var.sqrt() * noise
