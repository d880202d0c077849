"""How much two masks agree: IoU and IoM over the kept weights, per layer and global."""

from __future__ import annotations

from collections.abc import Callable

from sparse_mu.errors import ConfigError
from sparse_mu.pruning.mask import Mask


def _overlap(a: Mask, b: Mask, denominator: Callable[[int, int, int], int]) -> dict:
    if a.tensors.keys() != b.tensors.keys():
        raise ConfigError(f"masks cover different weights: {sorted(set(a.tensors) ^ set(b.tensors))[:5]}")
    counts = {}
    for k, m in a.tensors.items():
        n = b.tensors[k]
        if m.shape != n.shape:
            raise ConfigError(f"mask shapes differ at {k}: {tuple(m.shape)} vs {tuple(n.shape)}")
        counts[k] = (int((m & n).sum()), int(m.sum()), int(n.sum()))

    def ratio(both: int, in_a: int, in_b: int) -> float:
        d = denominator(both, in_a, in_b)
        return both / d if d else float("nan")

    total = tuple(map(sum, zip(*counts.values(), strict=True))) if counts else (0, 0, 0)
    return {"global": ratio(*total), "layers": {k: ratio(*c) for k, c in counts.items()}}


def iou(a: Mask, b: Mask) -> dict:
    """|A and B| / |A or B| of the kept weights: {"global": x, "layers": {name: x}} (nan if both empty)."""
    return _overlap(a, b, lambda both, in_a, in_b: in_a + in_b - both)


def iom(a: Mask, b: Mask) -> dict:
    """|A and B| / min(|A|, |B|) of the kept weights, the same shape as `iou`'s result."""
    return _overlap(a, b, lambda both, in_a, in_b: min(in_a, in_b))
