"""Per-sample gradient statistics without per-sample gradients of the whole net.

`grad_square_sums` gives sum_i g_i^2 and sum_i g_i (elementwise) over the samples of a batch
from one forward and one activation-only backward pass: hooks record every layer's input a
and the gradient d of the summed loss with respect to its output (in eval mode sample i's
rows of d are the gradient of its own loss), and each layer's per-sample gradient follows in
closed form:

- Linear on [B, in]: g_i = d_i a_i^T, so sum_i g_i^2 = (d^2)^T (a^2), no [B, out, in] tensor;
- Conv2d: g_i = d_i unfold(a)_i^T (a sum over output positions), one batched matrix product
  per chunk of samples, squared and summed over the chunk;
- BatchNorm in eval mode: g_i(weight) = sum over positions of d_i * (a_i - mean) / std,
  g_i(bias) = sum of d_i;
- biases: sums of d_i over positions.

A net with any other trainable parameter (or a layer called twice, or one whose input is
later changed in place) gets None, and the caller falls back to vmap.

`grad_dots` gives g_i . u for every sample i and direction u from the same hooks (for a Linear
or Conv2d layer <d_i a_i^T, U> is d_i . (the layer with weight U applied to a_i)), or by
forward-mode AD for other nets; again no per-sample gradient is formed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

Grads = dict[str, torch.Tensor]
# (logits [B, C], labels [B]) -> the sum over the batch of a per-sample loss
BatchLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def summed_log_likelihood(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sum_i log p(y_i|x_i), what Fisher forgetting differentiates."""
    return -F.cross_entropy(logits, y, reduction="sum")


def _closed_form(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, nn.Conv2d):
        return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
    if isinstance(m, _BATCHNORMS):
        return not m.training and m.running_mean is not None and m.running_var is not None
    return False


def _layers(net: nn.Module) -> dict[str, nn.Module] | None:
    """The modules owning the trainable parameters (by name), or None unless every trainable
    parameter is the weight or bias of a layer with a closed form, used by no other layer."""
    if any(m.training for m in net.modules()):
        return None
    layers, seen = {}, set()
    for name, m in net.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname not in ("weight", "bias") or not _closed_form(m) or id(p) in seen:
                return None
            seen.add(id(p))
            layers[name] = m
    return layers


def _key(layer: str, param: str) -> str:
    return f"{layer}.{param}" if layer else param


def _record(net: nn.Module, layers: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
            loss: BatchLoss) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """{layer: (input, gradient of the loss w.r.t. its output)}, or None (see module doc)."""
    inputs: dict[str, list] = {name: [] for name in layers}
    grads: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module, args, out):
            inputs[name].append((args[0], args[0]._version))
            out.register_hook(lambda g: grads.__setitem__(name, g))  # fires with the pre-in-place gradient
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            torch.autograd.grad(loss(net(x), y), x)  # only activation gradients: no weight gradients
    finally:
        for h in handles:
            h.remove()
    if any(len(v) != 1 or v[0][0]._version != v[0][1] for v in inputs.values()) or set(grads) != set(layers):
        return None
    return {name: (inputs[name][0][0].detach(), grads[name]) for name in layers}


def _conv_unfold(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    cols = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    return torch.bmm(d.flatten(2), cols.transpose(1, 2)).view(len(a), *m.weight.shape)


def _conv_each(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The convolution's own weight-gradient kernel, once per sample (what a batch-1 loop runs)."""
    w = m.weight.detach()
    return torch.stack([torch.ops.aten.convolution_backward(
        d[i:i + 1], a[i:i + 1], w, None, m.stride, m.padding, m.dilation, False, [0, 0], 1,
        [False, True, False])[1] for i in range(len(a))])


def _conv_grouped(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """One grouped convolution's weight gradient: the b samples as b groups."""
    b, out = len(a), m.out_channels
    w = m.weight.detach().repeat(b, 1, 1, 1)
    g = torch.ops.aten.convolution_backward(
        d.reshape(1, b * out, *d.shape[2:]), a.reshape(1, -1, *a.shape[2:]), w, None, m.stride, m.padding,
        m.dilation, False, [0, 0], b, [False, True, False])[1]
    return g.view(b, *m.weight.shape)


# Per-sample conv weight gradients three ways; which is fastest depends on the layer, the input
# size and the device (measured: any of the three wins somewhere), so the first chunk of every
# layer shape times each once and the fastest is kept for the process (`conv_routes`).
CONV_ROUTES = {"unfold": _conv_unfold, "each": _conv_each, "grouped": _conv_grouped}
conv_routes: dict[tuple, str] = {}


def _conv_grads(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients of a chunk, [b, *weight.shape]."""
    key = (a.device.type, a.dtype, tuple(a.shape), a.is_contiguous(), tuple(m.weight.shape), m.stride,
           m.padding, m.dilation)
    route = conv_routes.get(key)
    if route is not None:
        return CONV_ROUTES[route](m, a, d)
    times, out = {}, None
    for name, fn in CONV_ROUTES.items():
        _sync(a)
        start = time.perf_counter()
        g = fn(m, a, d)
        _sync(a)
        times[name] = time.perf_counter() - start
        out = g if out is None else out
    conv_routes[key] = min(times, key=times.__getitem__)
    return out


def _sync(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def _per_sample(m: nn.Module, a: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
    """{param: per-sample gradients of a chunk [b, *shape]} for a layer without a sum shortcut."""
    out = {}
    if isinstance(m, nn.Conv2d):
        out["weight"] = _conv_grads(m, a, d)
    elif isinstance(m, nn.Linear):
        out["weight"] = torch.einsum("bto,bti->boi", d.flatten(1, -2), a.flatten(1, -2))
    else:  # BatchNorm, eval mode
        shape = (1, -1) + (1,) * (a.ndim - 2)
        xhat = (a - m.running_mean.view(shape)) * torch.rsqrt(m.running_var.view(shape) + m.eps)
        if m.weight is not None:
            out["weight"] = (d * xhat).flatten(2).sum(2) if a.ndim > 2 else d * xhat
    if m.bias is not None:
        if isinstance(m, nn.Linear):
            out["bias"] = d.flatten(1, -2).sum(1)
        else:
            out["bias"] = d.flatten(2).sum(2) if d.ndim > 2 else d
    return out


def _layer_sums(m: nn.Module, a: torch.Tensor, d: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{param: (sum_i g_i^2, sum_i g_i)} of one layer over a chunk of samples."""
    if isinstance(m, nn.Linear) and a.ndim == 2:  # the closed form: no per-sample tensor
        out = {"weight": (d.pow(2).T @ a.pow(2), d.T @ a)}
        if m.bias is not None:
            out["bias"] = (d.pow(2).sum(0), d.sum(0))
        return out
    return {k: ((g * g).sum(0), g.sum(0)) for k, g in _per_sample(m, a, d).items()}


def grad_square_sums(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int,
                     loss: BatchLoss = summed_log_likelihood) -> tuple[Grads, Grads] | None:
    """({name: sum_i g_i^2}, {name: sum_i g_i}) over the batch, g_i the gradient of sample i's
    term of `loss` (a sum over samples) for every trainable parameter, unmasked; None if the net
    has a layer without a closed form. One forward and backward pass per `chunk_size` samples
    (on a CPU a chunk whose activations stay in cache is faster than the whole batch). The net
    must be in eval mode."""
    layers = _layers(net)
    if layers is None:
        return None
    squares: Grads = {}
    sums: Grads = {}
    for start in range(0, len(x), chunk_size):
        recorded = _record(net, layers, x[start:start + chunk_size], y[start:start + chunk_size], loss)
        if recorded is None:
            return None
        for name, m in layers.items():
            for pname, (sq, s) in _layer_sums(m, *recorded[name]).items():
                k = _key(name, pname)
                squares[k] = squares[k] + sq if k in squares else sq
                sums[k] = sums[k] + s if k in sums else s
    order = [k for k, p in net.named_parameters() if p.requires_grad]
    return {k: squares[k] for k in order}, {k: sums[k] for k in order}


def _layer_dots(m: nn.Module, a: torch.Tensor, d: torch.Tensor, us: list[Grads]) -> torch.Tensor:
    """[b, K]: g_i . u_k over one layer's parameters for K directions. Linear: without g_i,
    <d_i a_i^T, U> = <d_i, a_i U^T>, the K weights stacked into one layer call (a per-sample
    weight gradient would be out x in per sample). Conv2d and BatchNorm: the per-sample
    gradients of a chunk, then K dot products (one weight-gradient's work for all K directions,
    where K stacked convolutions would cost K times that)."""
    if not isinstance(m, nn.Linear):
        return sum(g.flatten(1) @ torch.stack([u[p] for u in us]).flatten(1).T
                   for p, g in _per_sample(m, a, d).items())
    k = len(us)
    out = F.linear(a, torch.cat([u["weight"] for u in us])).unflatten(-1, (k, -1)) * d.unsqueeze(-2)
    out = out.movedim(-2, 1)  # [b, K, ..., out]
    if m.bias is not None:
        out = out + torch.stack([d * u["bias"] for u in us], 1)
    return out.flatten(2).sum(2)


def summed_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def grad_dots(net: nn.Module, x: torch.Tensor, y: torch.Tensor, directions: list[Grads], *,
              chunk_size: int) -> torch.Tensor:
    """[len(directions), B]: g_i . u for every direction u ({name: tensor} over the trainable
    parameters) and sample i, g_i the gradient of sample i's cross-entropy, `chunk_size` samples
    at a time. Nets of closed-form layers: from the hooks, one forward and backward pass per chunk
    plus one layer evaluation per direction; other nets: forward-mode AD (one jvp per
    direction). The net must be in eval mode."""
    layers = _layers(net)
    rows = []
    for start in range(0, len(x), chunk_size):
        xc, yc = x[start:start + chunk_size], y[start:start + chunk_size]
        recorded = None if layers is None else _record(net, layers, xc, yc, summed_cross_entropy)
        if recorded is None:
            rows.append(_jvp_dots(net, xc, yc, directions))
            continue
        per_layer = [_layer_dots(m, *recorded[name], [{p: u[_key(name, p)] for p in ("weight", "bias")
                                                        if _key(name, p) in u} for u in directions])
                     for name, m in layers.items()]
        rows.append(torch.stack(per_layer).sum(0).T)
    return torch.cat(rows, dim=1)


def _jvp_dots(net: nn.Module, x: torch.Tensor, y: torch.Tensor, directions: list[Grads]) -> torch.Tensor:
    params = {k: p.detach() for k, p in net.named_parameters() if p.requires_grad}
    rest = ({k: p.detach() for k, p in net.named_parameters() if not p.requires_grad},
            dict(net.named_buffers()))

    def losses(p: Grads) -> torch.Tensor:
        return F.cross_entropy(functional_call(net, (p, *rest), (x,)), y, reduction="none")

    return torch.stack([jvp(losses, (params,), ({k: u[k] for k in params},))[1] for u in directions])
