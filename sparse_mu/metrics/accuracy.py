"""Model outputs over a loader, and accuracy."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from sparse_mu.data import TensorLoader
from sparse_mu.fast import autocast


@torch.inference_mode()
def predict(net: nn.Module, loader: TensorLoader, precision: str = "32-true") -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (float32, on the CPU) and labels, in the loader's order.

    Runs under the autocast that `precision` (the trainer's) trains with. Batches are copied to
    the host asynchronously (into pinned memory) with one synchronisation at the end, so the
    device never waits for the host and holds only one batch of outputs.
    """
    was_training = net.training
    net.eval()
    probs, labels, device = [], [], None
    for x, y, _ in loader:
        device = x.device
        with autocast(device, precision):
            logits = net(x)
        probs.append(torch.softmax(logits.float(), dim=1).to("cpu", non_blocking=True))
        labels.append(y.to("cpu", non_blocking=True))
    net.train(was_training)
    if device is None:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return torch.cat(probs), torch.cat(labels)


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent of class scores (probabilities or logits; torchmetrics), nan for
    an empty set (torchmetrics gives 0 there)."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * multiclass_accuracy(scores, labels, num_classes=scores.shape[1], average="micro").item()
