"""Accuracy per split, membership inference, gaps to Retrain and the Disparity Average."""

from sparse_mu.metrics.accuracy import accuracy, predict
from sparse_mu.metrics.mia import FEATURES, mia_efficacy, mia_privacy
from sparse_mu.metrics.unlearning import GAP_KEYS, disparity_average, evaluate, gaps

__all__ = [
    "FEATURES", "GAP_KEYS", "accuracy", "disparity_average", "evaluate", "gaps", "mia_efficacy",
    "mia_privacy", "predict",
]
