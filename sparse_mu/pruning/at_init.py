"""SNIP and GraSP: pruning at initialisation from a few training batches.

SNIP (Lee et al., ICLR 2019) keeps the weights of largest connection sensitivity |g * w|;
GraSP (Wang et al., ICLR 2020) removes the weights whose removal least reduces the gradient
flow, scoring -w * (H g). Both score the initial weights once, globally, on `samples_per_class`
seeded samples of each class of D (of D_r when un-pruning), with eval transforms and the net in
train mode (BatchNorm on batch statistics, as at the start of training); then the net trains
from its initial weights with the fixed mask, as after SynFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu.errors import check
from sparse_mu.pruning.mask import Mask, prunable_weights
from sparse_mu.pruning.pruners import Pruner, _check_sparsity


def balanced_sample(labels: torch.Tensor, indices: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """`per_class` seeded indices of each class among `indices` (all of a class if it has fewer)."""
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels[indices].unique():
        members = indices[labels[indices] == c]
        picked.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(picked).sort().values


def _batches(data, indices: torch.Tensor, batch_size: int = 256):
    return [(x, y) for x, y, _ in data.loader(indices, batch_size=batch_size, train=False)]


def snip_scores(net: nn.Module, batches) -> dict[str, torch.Tensor]:
    """|dL/dw * w| for every prunable weight, L the cross-entropy summed over `batches`."""
    weights = prunable_weights(net)
    net.zero_grad(set_to_none=True)
    for x, y in batches:
        F.cross_entropy(net(x), y, reduction="sum").backward()
    return {k: (w.grad * w).detach().abs() for k, w in weights.items()}


def grasp_scores(net: nn.Module, batches, temperature: float = 200.0) -> dict[str, torch.Tensor]:
    """-w * (H g) for every prunable weight: g the gradient of the cross-entropy of the
    logits / `temperature`, H its Hessian (a Hessian-gradient product by double backward)."""
    weights = prunable_weights(net)
    params = list(weights.values())
    g = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        for acc, gi in zip(g, torch.autograd.grad(F.cross_entropy(net(x) / temperature, y), params), strict=True):
            acc += gi
    net.zero_grad(set_to_none=True)
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(net(x) / temperature, y), params, create_graph=True)
        sum((gi * acc).sum() for gi, acc in zip(grads, g, strict=True)).backward()
    return {k: -(w.detach() * w.grad) for k, w in weights.items()}


@dataclass
class SNIP(Pruner):
    """SNIP at initialisation (global, one shot), then training from the initial weights."""

    sparsity: float = 0.95
    samples_per_class: int = 10
    seed: int = 0

    needs_trained_base = False
    needs_data = True

    def __post_init__(self):
        _check_sparsity(self.sparsity)
        check(isinstance(self.samples_per_class, int) and self.samples_per_class >= 1,
              "pruner.samples_per_class", "an integer >= 1", self.samples_per_class)

    def scores(self, net: nn.Module, batches) -> dict[str, torch.Tensor]:
        return snip_scores(net, batches)

    def prune(self, net, base, train, data=None):
        source, indices = data
        net.load_state_dict(base.init)
        net.train()
        batches = _batches(source, balanced_sample(source.y, indices, self.samples_per_class, self.seed))
        mask = Mask.from_scores(self.scores(net, batches), self.sparsity)
        return train(base.init, mask), mask


@dataclass
class GraSP(SNIP):
    """GraSP at initialisation (global, one shot): the weights of highest -w * (H g) are
    removed (Mask keeps the highest scores, so it is given w * (H g)); then training from the
    initial weights. `temperature` divides the logits, as published (200)."""

    temperature: float = 200.0

    def __post_init__(self):
        super().__post_init__()
        check(self.temperature > 0, "pruner.temperature", "> 0", self.temperature)

    def scores(self, net: nn.Module, batches) -> dict[str, torch.Tensor]:
        return {k: -s for k, s in grasp_scores(net, batches, self.temperature).items()}
