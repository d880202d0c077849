"""Masks, pruners, mask metrics and the published checkpoint format."""

from sparse_mu.pruning.analysis import iom, iou
from sparse_mu.pruning.at_init import SNIP, GraSP
from sparse_mu.pruning.mask import (
    Mask,
    classifier_head,
    layer_sparsity,
    prunable_weights,
    weight_sparsity,
)
from sparse_mu.pruning.n_m import NMPruner
from sparse_mu.pruning.pruners import IMP, OMP, BaseWeights, Dense, Pruner, Random
from sparse_mu.pruning.published import Checkpoint, export_published, load_published
from sparse_mu.pruning.structured import FilterL1, channel_sparsity, flops_report
from sparse_mu.pruning.synflow import SynFlow

__all__ = [
    "IMP", "OMP", "FilterL1", "SNIP", "GraSP", "NMPruner", "BaseWeights", "Checkpoint", "Dense", "Mask", "Pruner", "Random", "SynFlow",
    "channel_sparsity", "classifier_head", "flops_report", "export_published", "iom", "iou", "layer_sparsity", "load_published",
    "prunable_weights", "weight_sparsity",
]
