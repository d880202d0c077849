"""Retrain: the exact unlearner, training from scratch on D_r only."""

from __future__ import annotations

from sparse_mu.errors import check
from sparse_mu.unlearn.ft import FineTune


class Retrain(FineTune):
    """Cross-entropy on D_r from the base model's initial weights (same init seed), or from its
    rewind-epoch weights with `start: rewind`, with the mask applied; the training profile's
    schedule by default.

    `then_prune: true` (`unlearner@reference=retrain_then_prune`) is for the Retrain reference only: the
    pipeline then trains a dense model on D_r and runs the job's pruner on it instead of this
    loop (`sparse_mu.stages.reference_model`); as the unlearner it is refused (`pipeline.setup`).
    """

    def __init__(self, net, task, *, start: str = "init", then_prune: bool = False, **loop):
        super().__init__(net, task, **loop)
        check(start in ("init", "rewind"), "unlearner.start", "init or rewind", start)
        check(start == "init" or task.base.rewind is not None, "unlearner.start",
              "init with a pruner that trains no dense model (synflow, checkpoint, random with rewind: init)", start)
        self.net.load_state_dict(task.base.init if start == "init" else task.base.rewind)
        if task.mask is not None:
            task.mask.apply_(self.net)

    def settings(self) -> dict:
        return {k: v for k, v in super().settings().items() if k != "then_prune"}
