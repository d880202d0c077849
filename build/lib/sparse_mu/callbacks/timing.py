"""Wall-clock time of a training loop alone (setup and evaluation excluded)."""

from __future__ import annotations

import time

import torch
from lightning.pytorch.callbacks import Callback


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer(Callback):
    """Seconds from the first to the end of the last training step, device synchronised."""

    def __init__(self):
        self.seconds = 0.0
        self._start = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self._start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.seconds = time.perf_counter() - self._start
