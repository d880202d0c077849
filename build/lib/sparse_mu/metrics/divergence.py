"""How far one model's outputs are from another's."""

from __future__ import annotations

import torch


def kl_divergence(p_ref: torch.Tensor, p: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean over samples of KL(p_ref || p) (nats) between rows of softmax probabilities.

    `eps` keeps log(0) finite where a model gives a class zero probability in float32.
    """
    if len(p_ref) == 0:
        return float("nan")
    p_ref, p = p_ref.double(), p.double()
    kl = torch.xlogy(p_ref, p_ref) - p_ref * p.clamp_min(eps).log()
    return kl.sum(1).mean().clamp_min(0.0).item()
