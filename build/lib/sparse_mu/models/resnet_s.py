"""CIFAR ResNet-s (He et al. 2016, section 4.2) with option-A shortcuts.

Follows Yerlan Idelbayev's pytorch_resnet_cifar10, the `resnet20s` used by the
"Model Sparsity Can Simplify Machine Unlearning" code: 6n+2 layers, stage widths
16/32/64, about 0.27M parameters for ResNet-20.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu.errors import ConfigError
from sparse_mu.models.small import require_image_size


class PadShortcut(nn.Module):
    """Parameter-free option-A shortcut: subsample spatially by `stride`, zero-pad channels.

    A module rather than the reference implementation's lambda so models can be
    deep-copied and pickled.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = planes - in_planes
        self.pad_front = extra // 2
        self.pad_back = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class BasicBlockS(nn.Module):
    """Two 3x3 conv-BN layers with an option-A (or identity) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = (
            PadShortcut(in_planes, planes, stride)
            if stride != 1 or in_planes != planes
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetS(nn.Module):
    """CIFAR ResNet-s with `blocks_per_stage` blocks in each of 3 stages; head `linear`."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        blocks_per_stage: int = 3,
        arch: str = "resnet20s",
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ConfigError(f"arch.blocks_per_stage must be >= 1; got {blocks_per_stage!r}")
        require_image_size(arch, image_size, 8, "small_cnn or mlp")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for s in [stride] + [1] * (blocks_per_stage - 1):
                blocks.append(BasicBlockS(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        # Reference init: Kaiming-normal (fan_in) weights; biases and BN keep PyTorch defaults.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(self.avgpool(out), 1))


def resnet20s(num_classes: int, in_channels: int, image_size: int) -> ResNetS:
    """ResNet-20 for CIFAR (n=3, ~0.27M parameters)."""
    return ResNetS(num_classes, in_channels, image_size, 3, "resnet20s")


def resnet32s(num_classes: int, in_channels: int, image_size: int) -> ResNetS:
    """ResNet-32 for CIFAR (n=5, ~0.46M parameters)."""
    return ResNetS(num_classes, in_channels, image_size, 5, "resnet32s")


def resnet44s(num_classes: int, in_channels: int, image_size: int) -> ResNetS:
    """ResNet-44 for CIFAR (n=7, ~0.66M parameters)."""
    return ResNetS(num_classes, in_channels, image_size, 7, "resnet44s")


def resnet56s(num_classes: int, in_channels: int, image_size: int) -> ResNetS:
    """ResNet-56 for CIFAR (n=9, ~0.85M parameters)."""
    return ResNetS(num_classes, in_channels, image_size, 9, "resnet56s")
