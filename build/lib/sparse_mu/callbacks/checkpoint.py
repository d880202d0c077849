"""Resumable training: the whole loop state in one `last.ckpt`, replaced atomically."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class LastCheckpoint(Callback):
    """Writes `<dirpath>/last.ckpt` every `every_n_epochs` epochs (weights, optimiser, LR
    schedule, loop position and every callback's state, e.g. the mask and the L1 schedule).

    Written to a temporary name and renamed, so a run killed mid-write leaves the previous
    checkpoint intact. (Lightning's ModelCheckpoint only writes `last` beside a top-k file.)
    """

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1):
        self.dirpath, self.every = Path(dirpath), every_n_epochs

    @property
    def path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every:
            return
        tmp = self.dirpath / f".last.{os.getpid()}.tmp"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
