"""SynFlow (Tanaka et al. 2020): data-free pruning at initialisation by synaptic flow."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
from torch import nn

from sparse_mu.errors import check
from sparse_mu.pruning.mask import Mask, prunable_weights
from sparse_mu.pruning.pruners import Pruner, _check_sparsity


@torch.no_grad()
def _linearise(net: nn.Module) -> None:
    """Every floating-point parameter and buffer (BN statistics included) to its absolute value."""
    for t in itertools.chain(net.parameters(), net.buffers()):
        if t.is_floating_point():
            t.abs_()


def synflow_mask(net: nn.Module, input_shape: tuple[int, ...], sparsity: float, iterations: int = 100,
                 dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Mask:
    """The SynFlow mask of `net` at its current weights; `net` itself is left untouched.

    At iteration i of `iterations` the mask is re-derived at density (1 - sparsity)^(i / iterations)
    from the scores |theta * dR/dtheta|, R the summed output for an all-ones input of
    `input_shape`, computed on a copy of the net in eval mode with every parameter and buffer
    replaced by its absolute value (working on a copy is what restores the signs). Pruned
    weights are zero in the forward pass and stay pruned. Float64 by default: R is a sum over
    all paths of products of weights and overflows float32 in deep nets. Returns a CPU mask.
    """
    net = copy.deepcopy(net).to(device, dtype).eval()
    _linearise(net)
    weights = prunable_weights(net)
    dense = {k: w.detach().clone() for k, w in weights.items()}
    x = torch.ones(1, *input_shape, dtype=dtype, device=device)
    mask = Mask.ones(net)
    for i in range(1, iterations + 1):
        with torch.no_grad():
            for k, w in weights.items():
                w.copy_(dense[k] * mask.tensors[k])
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()
        scores = {k: (w.grad * w).detach().abs().masked_fill(~mask.tensors[k], -1.0) for k, w in weights.items()}
        mask = Mask.from_scores(scores, 1 - (1 - sparsity) ** (i / iterations))
    return mask.to("cpu")


@dataclass
class SynFlow(Pruner):
    """SynFlow at initialisation (global, iterative, data-free), then training from the initial
    weights with the fixed mask for the training profile's schedule. Needs no trained dense
    model, so the pipeline skips training one. `device: auto` scores on the GPU if there is one
    (float64 convolutions are slow on CPUs).
    """

    sparsity: float = 0.95
    iterations: int = 100
    double: bool = True
    device: str = "auto"

    needs_trained_base = False

    def __post_init__(self):
        _check_sparsity(self.sparsity)
        check(isinstance(self.iterations, int) and self.iterations >= 1, "pruner.iterations", "an integer >= 1", self.iterations)
        check(self.device in ("auto", "cpu", "cuda"), "pruner.device", "one of auto, cpu, cuda", self.device)

    def prune(self, net, base, train):
        net.load_state_dict(base.init)
        dtype = torch.float64 if self.double else torch.float32
        device = self.device if self.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
        mask = synflow_mask(net, net.input_shape, self.sparsity, self.iterations, dtype, device)
        return train(base.init, mask), mask
