"""Backdoor metrics: clean accuracy (SA) and attack success rate (ASR) of a Trojan model."""

from __future__ import annotations

import torch

from sparse_mu.metrics.accuracy import accuracy

BACKDOOR_KEYS = ("SA", "ASR", "ASR_legacy")


def attack_success(probs: torch.Tensor, labels: torch.Tensor, target: int) -> dict[str, float]:
    """ASR and ASR_legacy (percent) from a model's outputs on triggered images.

    `labels` are the images' true classes. ASR counts only images whose true class is not the
    target (an image of the target class predicted as the target is no attack); ASR_legacy, the
    published definition, counts every triggered image.
    """
    others = labels != target
    as_target = torch.full_like(labels, target)  # the attack's accuracy: how often it hits the target
    return {"ASR": accuracy(probs[others], as_target[others]), "ASR_legacy": accuracy(probs, as_target)}
