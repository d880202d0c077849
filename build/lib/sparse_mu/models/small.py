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
    """Three conv-BN-ReLU blocks (widths w, 2w, 4w), each of the last `pools` followed by a 2x
    max-pool, global average pool, `fc`.

    `pools=3` pools after every block: a quarter of the compute on 32x32 images (CPU-sized
    CIFAR experiments); 8x8 digits use the default 2.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        width: int = 32,
        pools: int = 2,
    ) -> None:
        super().__init__()
        if not 0 <= pools <= 3:
            raise ConfigError(f"arch.pools must be 0, 1, 2 or 3; got {pools!r}")
        require_image_size("small_cnn", image_size, 2**pools, "mlp")
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate([(in_channels, width), (width, 2 * width), (2 * width, 4 * width)]):
            layers += _conv_bn_relu(c_in, c_out)
            if i >= 3 - pools:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class LeNet(nn.Module):
    """LeNet-5 style: conv5x5(w)-ReLU-pool, conv5x5(2w)-ReLU-pool, Linear(`hidden`)-ReLU, `fc`.

    No BatchNorm and a wide hidden layer: it fits (memorises) a 10k-image CIFAR subset in about
    20 epochs on a CPU, the regime the paper's unlearning comparisons need (RA ~100 %, TA far
    below).
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 32,
                 hidden: int = 512) -> None:
        super().__init__()
        require_image_size("lenet", image_size, 16, "small_cnn or mlp")
        side = ((image_size - 4) // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
