"""Model architectures; every constructor takes `num_classes, in_channels, image_size` first."""

from __future__ import annotations

from sparse_mu.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50
from sparse_mu.models.resnet_s import (
    BasicBlockS,
    PadShortcut,
    ResNetS,
    resnet20s,
    resnet32s,
    resnet44s,
    resnet56s,
)
from sparse_mu.models.small import MLP, LeNet, SmallCNN, require_image_size
from sparse_mu.models.transformers import swin_t, vit
from sparse_mu.models.vgg import VGG, vgg16_bn

__all__ = [
    "MLP",
    "LeNet",
    "VGG",
    "BasicBlock",
    "BasicBlockS",
    "Bottleneck",
    "PadShortcut",
    "ResNet",
    "ResNetS",
    "SmallCNN",
    "require_image_size",
    "resnet18",
    "resnet20s",
    "resnet32s",
    "resnet44s",
    "resnet50",
    "resnet56s",
    "swin_t",
    "vgg16_bn",
    "vit",
]
