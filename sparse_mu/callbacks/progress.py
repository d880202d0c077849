"""Progress: a rich bar on a terminal, a few log lines per stage elsewhere (CI, SLURM)."""

from __future__ import annotations

import logging
import sys
import time

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

log = logging.getLogger("sparse_mu")


def stage_of(pl_module) -> str:
    """The stage a loop belongs to ("base", "prune 1", "retrain reference", "unlearn", ...)."""
    return getattr(pl_module, "stage", type(pl_module).__name__)


class StageBar(RichProgressBar):
    """Lightning's rich bar, described by the stage and epochs 1..E (`unlearn: epoch 3/10`)
    instead of `Epoch 2/9` for every loop alike, and without the logger's `v_num`."""

    def _get_train_description(self, current_epoch: int) -> str:
        total = f"/{self.trainer.max_epochs}" if self.trainer.max_epochs is not None else ""
        return f"{stage_of(self.trainer.lightning_module)}: epoch {current_epoch + 1}{total}"

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class QuietProgress(ProgressBar):
    """Logs `lines` evenly spaced epoch summaries per training loop, nothing per step."""

    def __init__(self, lines: int = 5):
        super().__init__()
        self.lines = max(1, lines)
        self._enabled = True
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        e, total = trainer.current_epoch + 1, trainer.max_epochs
        every = max(1, total // self.lines)
        if not self._enabled or (e % every and e != total):
            return
        metrics = {k.split("/")[-1]: f"{float(v):.4f}" for k, v in trainer.progress_bar_metrics.items()}
        log.info("%s: epoch %d/%d %s (%.1fs)", stage_of(pl_module), e, total,
                 " ".join(f"{k}={v}" for k, v in metrics.items()), time.perf_counter() - self._start)


def progress_bar(interactive: bool | None = None, lines: int = 5) -> ProgressBar:
    """`StageBar` (rich) if stdout is a terminal (or `interactive`), else `QuietProgress`."""
    if interactive is None:
        interactive = sys.stdout.isatty()
    return StageBar(leave=False) if interactive else QuietProgress(lines)
