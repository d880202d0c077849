"""Fixed, seeded, stratified splits of a labelled pool."""

from __future__ import annotations

import torch


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions 0..N-1 into (kept, held out) with `fraction` of every class held out.

    Deterministic for a seed; both parts come back sorted.
    """
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        held.append(members[: round(fraction * len(members))])
    held_out = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_out] = False
    return keep.nonzero().flatten(), held_out
