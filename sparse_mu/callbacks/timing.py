"""Wall-clock time of a training loop alone (setup and evaluation excluded): RTE."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Timer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer(Timer):
    """Lightning's `Timer` (from `on_train_start` to `on_train_end`: the training loop alone),
    synchronising the device at both ends, which `Timer` does not: without it, a GPU loop's
    queued kernels would run past the clock. A resumed loop's time includes the part before its
    checkpoint (`Timer` keeps its elapsed time in the checkpoint)."""

    def __init__(self):
        super().__init__(verbose=False)

    @property
    def seconds(self) -> float:
        return self.time_elapsed("train")

    def on_train_start(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        super().on_train_start(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        super().on_train_end(trainer, pl_module)
