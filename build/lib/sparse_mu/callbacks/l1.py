"""The L1 schedule of sparsity-aware unlearning: gamma_e for each epoch e."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from sparse_mu.errors import check

L1_SCHEDULES = ("constant", "linear_growth", "linear_decay")


class L1Schedule(Callback):
    """Sets the L1 strength for every epoch e = 0 .. E-1 of E (the method's `epochs`):
    constant gamma; linear_growth gamma * e / E; linear_decay gamma * (1 - e / E) (the paper's
    best). The method reads `current` in its training step.

    Its state (settings, current value and the value used in every epoch so far) is saved in
    checkpoints, so a resumed run continues the same schedule.
    """

    def __init__(self, gamma: float, schedule: str = "linear_decay", node: str = "unlearner"):
        check(gamma >= 0, f"{node}.gamma", ">= 0", gamma)
        check(schedule in L1_SCHEDULES, f"{node}.schedule", f"one of {', '.join(L1_SCHEDULES)}", schedule)
        self.gamma, self.schedule = float(gamma), schedule
        self.current = 0.0
        self.history: list[float] = []

    def value(self, epoch: int, epochs: int) -> float:
        """gamma_e for epoch `epoch` (0-based) of `epochs`."""
        if self.schedule == "constant":
            return self.gamma
        if self.schedule == "linear_growth":
            return self.gamma * epoch / epochs
        return self.gamma * (1 - epoch / epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the method's epochs, not the trainer's: a run stopped early and resumed keeps one schedule
        epochs = getattr(pl_module, "epochs", None) or trainer.max_epochs
        self.current = self.value(trainer.current_epoch, epochs)
        del self.history[trainer.current_epoch:]  # a resumed epoch replaces its old entry
        self.history.append(self.current)
        pl_module.log("unlearn/l1_gamma", self.current, on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "schedule": self.schedule, "current": self.current,
                "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.gamma, self.schedule = float(state_dict["gamma"]), state_dict["schedule"]
        self.current, self.history = float(state_dict["current"]), list(state_dict["history"])
