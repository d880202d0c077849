"""One LightningModule per unlearning method, on the shared `Unlearner` base."""

from sparse_mu.unlearn.base import Unlearner, UnlearnTask
from sparse_mu.unlearn.ft import FineTune
from sparse_mu.unlearn.retrain import Retrain

__all__ = ["FineTune", "Retrain", "UnlearnTask", "Unlearner"]
