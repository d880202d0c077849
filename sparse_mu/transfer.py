"""Transfer learning: a linear probe on a source model's frozen features, on a target data set.

The source model's classifier head is replaced by the identity; its features of the target's
train and test images are computed once (eval mode, eval transforms), and a fresh linear head is
trained on the train features and scored on the test features.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sparse_mu.data import Augment, EpochSampler, ImageData, TensorLoader
from sparse_mu.errors import check
from sparse_mu.metrics.accuracy import accuracy
from sparse_mu.pruning import classifier_head
from sparse_mu.training import TrainLoop


def adapt(target: ImageData, channels: int, mean: torch.Tensor, std: torch.Tensor) -> ImageData:
    """`target` as input for a source model with `channels` channels and statistics `mean`/`std`.

    Grey images are repeated to three channels, colour images averaged to one; every image is
    then normalised with the source's statistics, the ones its features were trained with.
    Resizing happens per batch in `features`, so large source resolutions never hold the whole
    resized target in memory.
    """
    c = target.in_channels
    check(c == channels or {c, channels} == {1, 3}, "transfer.dataset",
          f"images with {channels} channels, or 1 or 3 channels to convert, for this source model",
          f"{target.name} with {c} channels")
    x = target.x
    if c == 1 and channels == 3:
        x = x.repeat(1, 3, 1, 1)
    elif c == 3 and channels == 1:
        x = x.float().mean(1, keepdim=True).round().to(torch.uint8)
    return replace(target, x=x, mean=mean.clone(), std=std.clone(), augment=Augment(), _on_device={})


def feature_extractor(net: nn.Module) -> nn.Module:
    """A copy of `net` in eval mode whose classifier head is the identity."""
    net = copy.deepcopy(net).eval()
    parent, _, child = classifier_head(net).rpartition(".")
    setattr(net.get_submodule(parent), child, nn.Identity())
    return net


@torch.inference_mode()
def features(net: nn.Module, loader: TensorLoader, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) on the CPU of every batch of `loader`, images resized to `size` x `size`
    (bilinear, antialiased: the standard resize, linear, so it commutes with normalisation)."""
    out, labels = [], []
    for x, y, _ in loader:
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(net(x).float().flatten(1).cpu())
        labels.append(y.cpu())
    return torch.cat(out), torch.cat(labels)


class LinearProbe(TrainLoop):
    """A fresh linear head trained with cross-entropy on frozen `features` (config node
    `transfer.probe`); `accuracy` scores it on other features."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int, **loop):
        super().__init__(nn.Linear(features.shape[1], num_classes), node="transfer.probe", **loop)
        self.features, self.labels = features, labels

    def train_dataloader(self):
        data = TensorDataset(self.features, self.labels)
        return DataLoader(data, batch_size=self.batch_size, sampler=EpochSampler(len(data), True, self.seed))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.cross_entropy(x, y)
        self.log_loss("probe/loss", loss)
        return loss

    @torch.inference_mode()
    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy (percent) of the probe on `features`."""
        return accuracy(self.net.cpu().eval()(features), labels)
