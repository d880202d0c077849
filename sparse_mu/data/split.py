"""Fixed, seeded, stratified splits of a labelled pool."""

from __future__ import annotations

import torch


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions 0..N-1 into (kept, held out) with `fraction` of every class held out.

    Deterministic for a seed; both parts come back sorted.

    Not scikit-learn's `train_test_split(stratify=...)`: it holds out ceil(fraction * N) in all
    and spreads the rounding over classes at random (on digits, 180 instead of 179 samples, one
    class one more than round(fraction * n_c): ALGORITHMS.md wants `fraction` of every class), and
    it raises on a class with one sample, on fraction 0 and when fewer samples than classes are
    held out. Ours keeps exactly round(fraction * n_c) of class c, for any data set.
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
