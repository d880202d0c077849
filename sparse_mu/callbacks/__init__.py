"""Callbacks the pipeline attaches to every training loop, and the L1 schedule of l1_sparse."""

from sparse_mu.callbacks.checkpoint import LAST, last_checkpoint
from sparse_mu.callbacks.l1 import L1Schedule
from sparse_mu.callbacks.mask import MaskEnforcer
from sparse_mu.callbacks.progress import QuietProgress, progress_bar
from sparse_mu.callbacks.timing import StageTimer

__all__ = [
    "LAST", "L1Schedule", "MaskEnforcer", "QuietProgress", "StageTimer", "last_checkpoint", "progress_bar",
]
