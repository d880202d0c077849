"""SalUn: random labels, updating only the weights most salient for the forget set."""

from __future__ import annotations

import torch
from torch import nn

from sparse_mu.errors import check
from sparse_mu.pruning import Mask
from sparse_mu.unlearn.base import UnlearnTask
from sparse_mu.unlearn.per_sample import keep_masks, summed_grad
from sparse_mu.unlearn.rl import RandomLabels


class SalUn(RandomLabels):
    """RL whose gradients are zero outside a saliency mask: the `ratio` of all parameters
    (globally, BatchNorm and biases included) with the largest |gradient of the cross-entropy
    summed over D_f|, computed once before the first step (eval mode, eval transforms) on the
    original model. Pruned weights have saliency 0.

    As published, only gradients are masked: weight decay still shrinks the other weights.
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, ratio: float = 0.5, node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        check(0 < ratio <= 1, f"{node}.ratio", "a fraction in (0, 1]", ratio)
        self.ratio = ratio
        self.saliency: dict[str, torch.Tensor] = {}

    def on_train_start(self) -> None:
        was_training = self.net.training
        self.net.eval()
        keep, total = keep_masks(self.net, self.task.mask), {}
        for x, y, _ in self.loader("forget", train=False):
            for name, g in summed_grad(self.net, x, y, keep).items():
                total[name] = total[name] + g if name in total else g
        self.net.train(was_training)
        top = Mask.from_scores({k: g.abs() for k, g in total.items()}, 1.0 - self.ratio)
        self.saliency = {k: m.to(total[k].dtype) for k, m in top.tensors.items()}

    def on_after_backward(self) -> None:
        for name, p in self.net.named_parameters():
            if p.grad is not None and name in self.saliency:
                p.grad.mul_(self.saliency[name])
