"""Resumable training: the whole loop state in one `last.ckpt` (Lightning's ModelCheckpoint)."""

from __future__ import annotations

import warnings
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

LAST = "last.ckpt"
# Resuming reads the folder's checkpoint: that it is not empty is the point, not a warning.
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def last_checkpoint(dirpath: str | Path, every_n_epochs: int = 1) -> ModelCheckpoint:
    """Writes `<dirpath>/last.ckpt` every `every_n_epochs` epochs: weights, optimiser, LR
    schedule, loop position and every callback's state (the mask, the L1 schedule, the timer).

    One file, replaced each time: a top-1 checkpoint without a metric, named `last`. (With
    `save_last=True`, Lightning writes `last.ckpt` only as a second copy of a top-k file.)
    Lightning stages the bytes in a temporary file and moves it into place, so a run killed
    mid-write keeps its previous checkpoint. Resume with `trainer.fit(ckpt_path=<that file>)`.
    """
    return ModelCheckpoint(dirpath=dirpath, filename=Path(LAST).stem, every_n_epochs=every_n_epochs,
                           save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False)
