"""Callbacks the pipeline attaches to every training loop."""

from sparse_mu.callbacks.checkpoint import LastCheckpoint
from sparse_mu.callbacks.mask import MaskEnforcer
from sparse_mu.callbacks.progress import QuietProgress, progress_bar
from sparse_mu.callbacks.timing import StageTimer

__all__ = ["LastCheckpoint", "MaskEnforcer", "QuietProgress", "StageTimer", "progress_bar"]
