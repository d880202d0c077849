"""Masks, pruners and mask metrics."""

from sparse_mu.pruning.mask import Mask, classifier_head, prunable_weights, weight_sparsity
from sparse_mu.pruning.pruners import OMP, BaseWeights, Dense, Pruner

__all__ = [
    "OMP", "BaseWeights", "Dense", "Mask", "Pruner", "classifier_head", "prunable_weights",
    "weight_sparsity",
]
