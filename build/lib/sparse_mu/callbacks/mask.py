"""Keeps pruned weights exactly zero through any training loop."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from sparse_mu.pruning import Mask


class MaskEnforcer(Callback):
    """Masks gradients after every backward pass, and re-zeroes the pruned weights and their
    optimiser state (momentum, Adam moments) after every step, at every epoch's end (one-shot
    methods update there) and when training ends.

    Weight decay and momentum would otherwise move pruned weights. Attached by the pipeline
    whenever a mask exists; not a config option.
    """

    def __init__(self, mask: Mask):
        self.mask = mask
        self._params: list[torch.Tensor] = []
        self._masks: list[torch.Tensor] = []

    def state_dict(self) -> dict:
        return {"mask": self.mask.tensors}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict["mask"]
        if saved.keys() != self.mask.tensors.keys() or any(
                not torch.equal(saved[k].cpu(), v.cpu()) for k, v in self.mask.tensors.items()):
            raise RuntimeError("the checkpoint being resumed was written with a different mask")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = pl_module.net
        self.mask.validate(net)
        pairs = list(self.mask.pairs(net))
        self._params = [p for p, _ in pairs]
        # In each weight's own dtype and memory layout (channels-last convs): gradients and
        # optimiser buffers share it, so the multi-tensor ops below take their fast path.
        self._masks = [torch.empty_like(p, requires_grad=False).copy_(m) for p, m in pairs]
        self._zero_weights()

    @torch.no_grad()
    def _zero_weights(self) -> None:
        if self._params:
            torch._foreach_mul_(self._params, self._masks)

    @torch.no_grad()
    def _zero_state(self, trainer: L.Trainer) -> None:
        # One multi-tensor op over all per-weight buffers (momentum, Adam moments): this runs
        # after every step, and a kernel per buffer is most of its cost on a GPU.
        buffers, masks = [], []
        for opt in trainer.optimizers:
            for p, m in zip(self._params, self._masks, strict=True):
                for v in opt.state.get(p, {}).values():
                    if torch.is_tensor(v) and v.shape == p.shape:
                        buffers.append(v)
                        masks.append(m)
        if buffers:
            torch._foreach_mul_(buffers, masks)

    def on_after_backward(self, trainer, pl_module) -> None:
        pairs = [(p.grad, m) for p, m in zip(self._params, self._masks, strict=True) if p.grad is not None]
        if pairs:
            grads, masks = zip(*pairs, strict=True)
            with torch.no_grad():
                torch._foreach_mul_(list(grads), list(masks))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._zero_weights()
        self._zero_state(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._zero_weights()

    def on_train_end(self, trainer, pl_module) -> None:
        self._zero_weights()
