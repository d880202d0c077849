"""ResNet-18 / ResNet-50 with a CIFAR stem by default and an optional ImageNet stem."""

from __future__ import annotations

import torch
from torch import nn

from sparse_mu.models.small import require_image_size


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (projection when the shape changes)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as in torchvision's "ResNet v1.5"), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Four-stage ResNet (widths w, 2w, 4w, 8w) with global average pooling and head `fc`.

    The CIFAR stem (3x3 conv, stride 1, no max-pool) keeps 32x32 inputs at 4x4 before
    pooling; the ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool) downsamples
    by 32 overall and so needs at least 32x32 inputs.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int,
        image_size: int,
        imagenet_stem: bool = False,
        width: int = 64,
        arch: str = "resnet",
    ) -> None:
        super().__init__()
        if imagenet_stem:
            require_image_size(
                f"{arch} (imagenet_stem=true)",
                image_size,
                32,
                f"{arch} with arch.imagenet_stem=false, small_cnn, mlp or resnet20s",
            )
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        in_planes = width
        stages = []
        for i, num_blocks in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for s in [1 if i == 0 else 2] + [1] * (num_blocks - 1):
                blocks.append(block(in_planes, planes, s))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        # torchvision's init; the Linear head keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def resnet18(
    num_classes: int,
    in_channels: int,
    image_size: int,
    imagenet_stem: bool = False,
    width: int = 64,
) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); ~11.17M parameters on CIFAR-10."""
    return ResNet(
        BasicBlock,
        (2, 2, 2, 2),
        num_classes,
        in_channels,
        image_size,
        imagenet_stem=imagenet_stem,
        width=width,
        arch="resnet18",
    )


def resnet50(
    num_classes: int,
    in_channels: int,
    image_size: int,
    imagenet_stem: bool = False,
    width: int = 64,
) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); ~23.52M parameters on CIFAR-10."""
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes,
        in_channels,
        image_size,
        imagenet_stem=imagenet_stem,
        width=width,
        arch="resnet50",
    )
