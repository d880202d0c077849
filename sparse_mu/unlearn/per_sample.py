"""Gradients of many losses at once with torch.func: per sample, per class, or summed.

`per_sample_grads` vmaps `grad` over the samples of a batch, in chunks sized to a memory
budget (and on a CPU to the measured fastest size), so no Python loop over samples is ever run. Call these with the net in eval mode:
BatchNorm then reads its running statistics as plain inputs (in train mode a single sample has
no batch statistics, and vmap refuses the in-place running-statistics update).

Gradients are dicts parameter name -> tensor; a leading dimension indexes samples (or classes).
With `keep` (from `keep_masks`), the gradients of pruned coordinates are zero: the published
code prunes by reparametrisation (`weight = weight_orig * mask`), so its gradients w.r.t.
`weight_orig` are masked in exactly this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from sparse_mu.pruning import Mask

Grads = dict[str, torch.Tensor]
# (logits of one sample [C], its label []) -> scalar
SampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log p(y|x) of one sample."""
    return F.cross_entropy(logits, y)


def log_likelihood(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(y|x) of one sample (Fisher forgetting differentiates this, not the loss)."""
    return -F.cross_entropy(logits, y)


def trainable(net: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters gradients are taken for: those that require grad."""
    return {k: p for k, p in net.named_parameters() if p.requires_grad}


def keep_masks(net: nn.Module, mask: Mask | None) -> Grads | None:
    """The mask as float tensors on the parameters' device and dtype (None: dense)."""
    if mask is None:
        return None
    params = dict(net.named_parameters())
    return {k: m.to(params[k].device, params[k].dtype) for k, m in mask.tensors.items()}


# Samples per chunk on a CPU: chunks of 16-32 keep activations and per-sample tensors in cache
# and were fastest for SmallCNN, LeNet and ResNet-20s on 8x8 and 32x32 inputs (the whole batch
# of 256 was 1.3-2.3x slower than 32; `python benchmarks/per_sample_grads.py --calibrate`).
CPU_CHUNK = 32


def chunk_size_for(net: nn.Module, memory_mb: float) -> int:
    """Samples per vectorised chunk: so that their gradients, and as much again for the backward
    pass's intermediates, take about `memory_mb` MiB (a rough rule, not a bound), and on a CPU
    at most `CPU_CHUNK` (measured: the fastest there)."""
    params = trainable(net).values()
    per_sample = 2 * sum(p.numel() * p.element_size() for p in params)
    by_memory = max(1, int(memory_mb * 2**20 // max(per_sample, 1)))
    on_cpu = all(p.device.type == "cpu" for p in params)
    return min(by_memory, CPU_CHUNK) if on_cpu else by_memory


def _split(net: nn.Module) -> tuple[Grads, tuple[Grads, Grads]]:
    """(trainable parameters, (frozen parameters, buffers)), all detached, for functional_call."""
    params = {k: p.detach() for k, p in trainable(net).items()}
    frozen = {k: p.detach() for k, p in net.named_parameters() if not p.requires_grad}
    return params, (frozen, dict(net.named_buffers()))


def _masked(grads: Grads, keep: Grads | None) -> Grads:
    if keep is None:
        return grads
    return {k: g * keep[k] if k in keep else g for k, g in grads.items()}


def per_sample_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int,
                     loss: SampleLoss = cross_entropy, keep: Grads | None = None) -> Iterator[Grads]:
    """For every sample i the gradient of `loss(net(x_i), y_i)`, yielded chunk by chunk as
    {name: [chunk, *param.shape]}; `chunk_size` bounds the memory of one chunk."""
    params, rest = _split(net)

    def sample_loss(p: Grads, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss(functional_call(net, (p, *rest), (xi.unsqueeze(0),)).squeeze(0), yi)

    each = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    for start in range(0, len(x), chunk_size):
        yield _masked(each(params, x[start:start + chunk_size], y[start:start + chunk_size]), keep)


def class_grads(net: nn.Module, x: torch.Tensor, *, chunk_size: int | None = None,
                keep: Grads | None = None) -> tuple[Grads, torch.Tensor]:
    """For every class c the gradient of the batch-mean cross-entropy toward c,
    {name: [C, *param.shape]}, and the batch's softmax [B, C]: one forward pass, C vectorised
    backward passes (`chunk_size` of them at a time; None: all at once)."""
    params, rest = _split(net)

    def class_losses(p: Grads) -> tuple[torch.Tensor, torch.Tensor]:
        logits = functional_call(net, (p, *rest), (x,))
        return -logits.log_softmax(-1).mean(0), logits.softmax(-1).detach()

    grads, prob = jacrev(class_losses, has_aux=True, chunk_size=chunk_size)(params)
    return _masked(grads, keep), prob


def summed_grad(net: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: Grads | None = None, *,
                chunk_size: int | None = None) -> Grads:
    """Gradient of the summed cross-entropy of a batch, i.e. the sum of its per-sample
    gradients (exactly so in eval mode, where samples do not interact); one backward pass per
    `chunk_size` samples (None: the whole batch), summed. Chunk only in eval mode: in train mode
    BatchNorm's batch statistics couple the samples of a chunk."""
    params = trainable(net)
    step = chunk_size or len(x)
    total: list[torch.Tensor] | None = None
    with torch.enable_grad():
        for start in range(0, len(x), step):
            loss = F.cross_entropy(net(x[start:start + step]), y[start:start + step], reduction="sum")
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True, materialize_grads=True)
            total = list(grads) if total is None else [t + g for t, g in zip(total, grads, strict=True)]
    return _masked({k: g.detach() for k, g in zip(params, total, strict=True)}, keep)


def flatten(grads: Grads) -> torch.Tensor:
    """{name: [n, *shape]} -> [n, total parameters], parameters in dict order."""
    return torch.cat([g.flatten(1) for g in grads.values()], dim=1)
