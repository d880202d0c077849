"""Accuracy per split, membership inference, gaps to Retrain and the Disparity Average; backdoor
SA/ASR; KL divergence between models' outputs."""

from sparse_mu.metrics.accuracy import accuracy, predict
from sparse_mu.metrics.backdoor import BACKDOOR_KEYS, attack_success
from sparse_mu.metrics.divergence import kl_divergence
from sparse_mu.metrics.mia import FEATURES, mia_efficacy, mia_privacy
from sparse_mu.metrics.unlearning import GAP_KEYS, NESTED, disparity_average, evaluate, gaps

__all__ = [
    "BACKDOOR_KEYS", "FEATURES", "GAP_KEYS", "NESTED", "accuracy", "attack_success", "disparity_average",
    "evaluate", "gaps", "kl_divergence", "mia_efficacy", "mia_privacy", "predict",
]
