"""Speed options that leave every algorithm as it is: precision, memory layout, optimiser
kernels, compilation (config: `trainer.precision`, `fast.*`; see docs/performance.md).

Each is resolved once per job from the device it runs on, so the resolved value (not `auto`) is
what the config records and what enters cache keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from sparse_mu.errors import check

# Lightning's precision names (its aliases 16/32/64 and "bf16" included), plus our `auto`.
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16", "16-mixed", "16", "bf16-true", "16-true",
              "64-true", "64", "transformer-engine")
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16}


def resolve_precision(value: object, device: torch.device) -> str:
    """`auto`: bf16-mixed where training runs on a CUDA device with bf16, else 32-true."""
    value = str(value)
    check(value in PRECISIONS, "trainer.precision", f"one of {', '.join(PRECISIONS)}", value)
    if value != "auto":
        return value
    return "bf16-mixed" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32-true"


def resolve_channels_last(value: object) -> bool:
    """`auto`: on. Convolutions run faster channels-last on the CPU (oneDNN: 1.17-1.38x training,
    1.2-1.75x inference, benchmarks/layout.py) and on GPU tensor cores; a net without 4-D
    weights is unaffected."""
    check(value in ("auto", True, False), "fast.channels_last", "auto, true or false", value)
    return value in ("auto", True)


def prepare_net(net: nn.Module, channels_last: bool) -> nn.Module:
    """The net in the memory layout its convolutions run fastest in (same values, same keys)."""
    return net.to(memory_format=torch.channels_last) if channels_last else net


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype mixed precision computes in; None for full-precision settings."""
    return _AUTOCAST.get(precision)


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """Inference under the autocast Lightning trains with at `precision` (none for 32-true)."""
    dtype = autocast_dtype(precision)
    with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
        yield


def optimizer_kernel(device: torch.device) -> dict[str, bool]:
    """Keyword for torch.optim SGD/Adam/AdamW: one fused kernel over all parameters where torch
    has one (CUDA, CPU; on the CPU its step measured 2.2-2.7x faster than the per-tensor and
    foreach versions, benchmarks/layout.py), else torch's default."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {}
