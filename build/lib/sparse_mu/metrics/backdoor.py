"""Backdoor metrics: clean accuracy (SA) and attack success rate (ASR) of a Trojan model."""

from __future__ import annotations

import torch

BACKDOOR_KEYS = ("SA", "ASR", "ASR_legacy")


def attack_success(probs: torch.Tensor, labels: torch.Tensor, target: int) -> dict[str, float]:
    """ASR and ASR_legacy (percent) from a model's outputs on triggered images.

    `labels` are the images' true classes. ASR counts only images whose true class is not the
    target (an image of the target class predicted as the target is no attack); ASR_legacy, the
    published definition, counts every triggered image.
    """
    hit = probs.argmax(1) == target
    others = labels != target

    def percent(mask: torch.Tensor) -> float:
        return 100.0 * hit[mask].float().mean().item() if mask.any() else float("nan")

    return {"ASR": percent(others), "ASR_legacy": percent(torch.ones_like(others))}
