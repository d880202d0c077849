"""Small models for quick experiments and tiny data sets (e.g. scikit-learn digits)."""

from __future__ import annotations

import torch
from torch import nn

from sparse_mu.errors import ConfigError


def require_image_size(arch: str, image_size: int, minimum: int, alternatives: str) -> None:
    """Raise `ConfigError` (a `ValueError`) if `arch` cannot downsample `image_size` pixels.

    Failing at construction time gives the user an actionable message instead of a
    shape error deep inside the first forward pass.
    """
    if image_size < minimum:
        raise ConfigError(
            f"arch {arch} needs images of at least {minimum}x{minimum} pixels; "
            f"this data set has {image_size}x{image_size}. Pick arch={alternatives}."
        )


class MLP(nn.Module):
    """Fully connected network: flatten -> [Linear, ReLU] * depth -> Linear head `fc`."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        hidden: int = 256,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if depth < 0:
            raise ConfigError(f"arch.depth must be >= 0; got {depth!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks (widths w, 2w, 4w; two 2x max-pools), global average pool, `fc`."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        width: int = 32,
    ) -> None:
        super().__init__()
        require_image_size("small_cnn", image_size, 4, "mlp")
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 4 * width),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
