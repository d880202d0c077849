"""Shape, naming, size and determinism checks for `sparse_mu.models`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_mu.errors import ConfigError
from sparse_mu.models import (
    MLP,
    LeNet,
    SmallCNN,
    resnet18,
    resnet20s,
    resnet32s,
    resnet44s,
    resnet50,
    resnet56s,
    swin_t,
    vgg16_bn,
    vit,
)
from sparse_mu.pruning import classifier_head as classifier_head_name
from sparse_mu.pruning import prunable_weights

ARCH_DIR = Path(__file__).resolve().parents[1] / "sparse_mu" / "conf" / "arch"

# name -> (constructor, expected head name, also works on 8x8 one-channel digits)
ARCHS: dict[str, tuple[Callable[..., nn.Module], str, bool]] = {
    "mlp": (MLP, "fc", True),
    "small_cnn": (SmallCNN, "fc", True),
    "lenet": (LeNet, "fc", False),
    "resnet18": (resnet18, "fc", False),
    "resnet50": (resnet50, "fc", False),
    "resnet20s": (resnet20s, "linear", True),
    "resnet32s": (resnet32s, "linear", False),
    "resnet44s": (resnet44s, "linear", False),
    "resnet56s": (resnet56s, "linear", False),
    "vgg16_bn": (vgg16_bn, "classifier", False),
}


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("name", list(ARCHS))
def test_cifar_shape_and_head(name: str) -> None:
    ctor, head, _ = ARCHS[name]
    model = ctor(num_classes=10, in_channels=3, image_size=32)
    batch = 1 if name == "resnet50" else 2
    out = _logits(model, torch.randn(batch, 3, 32, 32))
    assert out.shape == (batch, 10)
    assert classifier_head_name(model) == head
    assert dict(model.named_parameters())[f"{head}.weight"].shape[0] == 10


@pytest.mark.parametrize("name", [n for n, (_, _, digits) in ARCHS.items() if digits])
def test_digits_shape(name: str) -> None:
    model = ARCHS[name][0](num_classes=10, in_channels=1, image_size=8)
    assert _logits(model, torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_digits_train_mode_backward() -> None:
    model = resnet20s(num_classes=10, in_channels=1, image_size=8)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_vgg_on_small_images_names_arch() -> None:
    with pytest.raises(ValueError, match="vgg16_bn"):
        vgg16_bn(num_classes=10, in_channels=1, image_size=8)


@pytest.mark.parametrize(
    ("ctor", "kwargs", "arch"),
    [
        (resnet18, {"imagenet_stem": True}, "resnet18"),
        (resnet50, {"imagenet_stem": True}, "resnet50"),
        (resnet20s, {}, "resnet20s"),
    ],
)
def test_too_small_images_raise(ctor: Callable[..., nn.Module], kwargs: dict, arch: str) -> None:
    with pytest.raises(ValueError, match=arch):
        ctor(num_classes=10, in_channels=1, image_size=4, **kwargs)


def test_resnet18_cifar_stem_accepts_digits() -> None:
    model = resnet18(num_classes=10, in_channels=1, image_size=8, width=8)
    assert _logits(model, torch.randn(2, 1, 8, 8)).shape == (2, 10)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("ctor", "expected"),
    [
        # Idelbayev's table: ResNet-20 0.27M ... ResNet-56 0.85M (CIFAR-10).
        (resnet20s, 269_722),
        (resnet56s, 853_018),
        # The common CIFAR ResNet-18 (3x3 stem, no max-pool).
        (resnet18, 11_173_962),
        (vgg16_bn, 14_724_042),
    ],
)
def test_parameter_counts(ctor: Callable[..., nn.Module], expected: int) -> None:
    assert _num_params(ctor(num_classes=10, in_channels=3, image_size=32)) == expected


def test_resnet18_imagenet_stem_matches_torchvision_size() -> None:
    model = resnet18(num_classes=10, in_channels=3, image_size=64, imagenet_stem=True)
    assert _num_params(model) == 11_181_642
    assert _logits(model, torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_option_a_shortcut_is_parameter_free() -> None:
    model = resnet20s(num_classes=10, in_channels=3, image_size=32)
    assert not any("shortcut" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("name", ["mlp", "small_cnn", "resnet20s", "resnet18"])
def test_same_seed_same_weights(name: str) -> None:
    ctor = ARCHS[name][0]
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        states.append(ctor(num_classes=10, in_channels=3, image_size=32).state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    torch.manual_seed(124)
    other = ctor(num_classes=10, in_channels=3, image_size=32).state_dict()
    head = f"{ARCHS[name][1]}.weight"
    assert not torch.equal(states[0][head], other[head])


@pytest.mark.parametrize("name", ["small_cnn", "resnet20s"])
def test_deepcopy_gives_identical_outputs(name: str) -> None:
    torch.manual_seed(0)
    model = ARCHS[name][0](num_classes=10, in_channels=3, image_size=32)
    clone = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_logits(model, x), _logits(clone, x))
    assert all(
        a.data_ptr() != b.data_ptr()
        for a, b in zip(model.parameters(), clone.parameters(), strict=True)
    )


def test_mlp_hyperparameters() -> None:
    model = MLP(num_classes=3, in_channels=1, image_size=8, hidden=16, depth=3)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (64, 16),
        (16, 16),
        (16, 16),
        (16, 3),
    ]


@pytest.mark.parametrize("name", [n for n in ARCHS if (ARCH_DIR / f"{n}.yaml").exists()])
def test_hydra_config_instantiates(name: str) -> None:
    hydra_utils = pytest.importorskip("hydra.utils")
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.load(ARCH_DIR / f"{name}.yaml")
    channels, size = (1, 8) if ARCHS[name][2] else (3, 32)
    model = hydra_utils.instantiate(cfg, num_classes=10, in_channels=channels, image_size=size)
    assert classifier_head_name(model) == ARCHS[name][1]


TRANSFORMERS: dict[str, tuple[Callable[..., nn.Module], dict, str]] = {
    "vit": (vit, {"num_layers": 1, "hidden_dim": 32, "mlp_dim": 64, "num_heads": 2}, "heads.head"),
    "swin_t": (swin_t, {"embed_dim": 12, "depths": (1, 1), "num_heads": (1, 2)}, "head"),
}


@pytest.mark.parametrize("name", list(TRANSFORMERS))
@pytest.mark.parametrize("channels", [1, 3])
def test_transformers_shape_head_and_prunable_weights(name: str, channels: int) -> None:
    ctor, small, head = TRANSFORMERS[name]
    model = ctor(num_classes=7, in_channels=channels, image_size=16, **small)
    assert _logits(model, torch.randn(2, channels, 16, 16)).shape == (2, 7)
    assert classifier_head_name(model) == head
    assert dict(model.named_parameters())[f"{head}.weight"].abs().sum() > 0  # not zero-initialised
    names = set(prunable_weights(model))
    assert f"{head}.weight" not in names
    assert all(n.endswith(("weight", "in_proj_weight")) for n in names)
    assert not any(k in n for n in names for k in ("norm", "pos_embedding", "class_token", "bias_table"))
    if name == "vit":  # the fused q/k/v projection of nn.MultiheadAttention is a Linear weight too
        assert "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in names


def test_transformer_size_errors() -> None:
    with pytest.raises(ConfigError, match="swin_t .* at least 16x16"):
        swin_t(num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(ConfigError, match="arch.patch_size must divide"):
        vit(num_classes=10, in_channels=1, image_size=8, patch_size=3)
    with pytest.raises(ConfigError, match="arch.num_heads"):
        vit(num_classes=10, in_channels=1, image_size=8, hidden_dim=30, num_heads=4)
