"""CIFAR VGG-16 with batch normalisation."""

from __future__ import annotations

import torch
from torch import nn

from sparse_mu.models.small import require_image_size

# fmt: off
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
# fmt: on


class VGG(nn.Module):
    """VGG feature extractor, global average pool and a single Linear head `classifier`.

    The global pool (instead of the ImageNet VGG's 7x7 flatten) keeps the head at
    512 inputs whatever the image size.
    """

    def __init__(
        self,
        cfg: tuple[int | str, ...],
        num_classes: int,
        in_channels: int,
        image_size: int,
        arch: str = "vgg",
    ) -> None:
        super().__init__()
        num_pools = sum(1 for v in cfg if v == "M")
        require_image_size(arch, image_size, 2**num_pools, "small_cnn, mlp or resnet20s")
        layers: list[nn.Module] = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
            else:
                assert isinstance(v, int)
                layers += [
                    nn.Conv2d(channels, v, 3, padding=1, bias=False),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        # torchvision's VGG init; the Linear head keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16_bn(num_classes: int, in_channels: int, image_size: int) -> VGG:
    """VGG-16 with BN for 32x32 (or larger) images; ~14.7M parameters on CIFAR-10."""
    return VGG(VGG16_CFG, num_classes, in_channels, image_size, "vgg16_bn")
