"""SalUn: random labels, updating only the weights most salient for the forget set."""

from __future__ import annotations

import torch
from torch import nn

from sparse_mu.errors import check
from sparse_mu.unlearn.base import UnlearnTask
from sparse_mu.unlearn.per_sample import Grads, keep_masks, summed_grad
from sparse_mu.unlearn.rl import RandomLabels


def saliency_mask(grads: Grads, keep: Grads | None, ratio: float) -> Grads:
    """1 on the round(`ratio` * m) coordinates with the largest |gradient| among the m that can
    move, 0 elsewhere, one global ranking over all tensors.

    Movable: every coordinate of a tensor the mask does not cover (biases, BatchNorm, the head:
    never pruned), and the kept ones (`keep` = 1) of those it covers; a pruned coordinate is
    never salient. Ties are broken by position, so the count is exact.
    """
    movable = [(keep[k] != 0 if keep is not None and k in keep else torch.ones_like(g, dtype=torch.bool)).flatten()
               for k, g in grads.items()]
    can = torch.cat(movable)
    scores = torch.cat([g.detach().abs().flatten() for g in grads.values()]).masked_fill(~can, -1.0)
    chosen = torch.zeros_like(can)
    chosen[torch.topk(scores, round(ratio * int(can.sum())), sorted=False).indices] = True
    out, i = {}, 0
    for k, g in grads.items():
        out[k] = chosen[i:i + g.numel()].view_as(g).to(g.dtype)
        i += g.numel()
    return out


class SaliencyMasked:
    """For an Unlearner whose gradients are multiplied by a saliency mask (SalUn, SFR-on): the
    subclass's `saliency_of(keep)` computes it once, in eval mode, from the model as unlearning
    starts (`ready_saliency`). The mask is saved in the checkpoint, so a resumed run keeps it
    instead of recomputing it from partly unlearned weights."""

    saliency: Grads

    def saliency_of(self, keep: Grads | None) -> Grads:
        raise NotImplementedError

    def ready_saliency(self) -> None:
        params = dict(self.net.named_parameters())
        if self.saliency:  # restored from the checkpoint
            self.saliency = {k: m.to(params[k].device, params[k].dtype) for k, m in self.saliency.items()}
            return
        was_training = self.net.training
        self.net.eval()
        self.saliency = self.saliency_of(keep_masks(self.net, self.task.mask))
        self.net.train(was_training)

    def mask_gradients(self) -> None:
        for name, p in self.net.named_parameters():
            if p.grad is not None and name in self.saliency:
                p.grad.mul_(self.saliency[name])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["saliency"] = {k: m.cpu() for k, m in self.saliency.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.saliency = checkpoint.get("saliency", {})


class SalUn(SaliencyMasked, RandomLabels):
    """RL whose gradients are zero outside a saliency mask (`saliency_mask`): the `ratio` of the
    parameters that can move (pruned weights excluded; biases, BatchNorm and the head included,
    as the published mask ranks every parameter) with the largest |gradient of the
    cross-entropy summed over D_f|, computed once before the first step (eval mode, eval
    transforms) on the original model. The mask is saved in the checkpoint, so a resumed run
    keeps it instead of recomputing it from partly unlearned weights.

    Only gradients are masked: weight decay still shrinks the other weights (docs/unlearners.md).
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, ratio: float = 0.5, node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        check(0 < ratio <= 1, f"{node}.ratio", "a fraction in (0, 1]", ratio)
        self.ratio = ratio
        self.saliency: Grads = {}

    def on_train_start(self) -> None:
        super().on_train_start()
        self.ready_saliency()

    def saliency_of(self, keep: Grads | None) -> Grads:
        total: Grads = {}
        for x, y, _ in self.loader("forget", train=False):
            for name, g in summed_grad(self.net, x, y, keep).items():
                total[name] = total[name] + g if name in total else g
        return saliency_mask(total, keep, self.ratio)

    def on_after_backward(self) -> None:
        self.mask_gradients()
