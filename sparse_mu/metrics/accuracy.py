"""Model outputs over a loader, and accuracy."""

from __future__ import annotations

import torch
from torch import nn

from sparse_mu.data import TensorLoader


@torch.inference_mode()
def predict(net: nn.Module, loader: TensorLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (float32, on the CPU) and labels, in the loader's order."""
    was_training = net.training
    net.eval()
    probs, labels = [], []
    for x, y, _ in loader:
        probs.append(torch.softmax(net(x).float(), dim=1).cpu())
        labels.append(y.cpu())
    net.train(was_training)
    if not probs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(probs), torch.cat(labels)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent (nan for an empty set)."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * (probs.argmax(1) == labels).float().mean().item()
