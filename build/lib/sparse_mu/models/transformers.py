"""Vision transformers from torchvision, built with our `(num_classes, in_channels, image_size)`.

Their heads (`heads.head`, `head`) are the last Linear layers, so `classifier_head` finds them.
Prunable: the patch embedding, the attention projections and the MLP weights (see
`sparse_mu.pruning.mask`).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer

from sparse_mu.errors import ConfigError
from sparse_mu.models.small import require_image_size


def vit(num_classes: int, in_channels: int, image_size: int, patch_size: int = 4, num_layers: int = 6,
        num_heads: int = 8, hidden_dim: int = 384, mlp_dim: int = 1536, dropout: float = 0.0,
        attention_dropout: float = 0.0) -> VisionTransformer:
    """ViT (Dosovitskiy et al.); the defaults are a small one for 32x32 images (64 patches of 4x4).

    vit_b_16 on ImageNet: patch_size 16, num_layers 12, num_heads 12, hidden_dim 768, mlp_dim 3072.
    """
    require_image_size(f"vit (patch_size={patch_size})", image_size, patch_size,
                       "small_cnn or mlp (or a smaller arch.patch_size)")
    if image_size % patch_size:
        raise ConfigError(f"arch.patch_size must divide the image size {image_size}; got {patch_size}")
    if hidden_dim % num_heads:
        raise ConfigError(f"arch.num_heads must divide arch.hidden_dim={hidden_dim}; got {num_heads}")
    net = VisionTransformer(image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim,
                            dropout=dropout, attention_dropout=attention_dropout, num_classes=num_classes)
    if in_channels != 3:
        net.conv_proj = nn.Conv2d(in_channels, hidden_dim, patch_size, stride=patch_size)
        nn.init.trunc_normal_(net.conv_proj.weight, std=(1 / (in_channels * patch_size**2)) ** 0.5)
        nn.init.zeros_(net.conv_proj.bias)
    # torchvision zeroes the head: every gradient-based pruning score (SynFlow) would then be 0
    net.heads.head.reset_parameters()
    return net


def swin_t(num_classes: int, in_channels: int, image_size: int, patch_size: int = 2, window_size: int = 4,
           embed_dim: int = 96, depths: tuple[int, ...] = (2, 2, 6, 2), num_heads: tuple[int, ...] = (3, 6, 12, 24),
           stochastic_depth_prob: float = 0.2) -> SwinTransformer:
    """Swin-T (Liu et al.). Defaults for 32x32 images as in the published code (2x2 patches,
    4x4 windows); torchvision's ImageNet swin_t: patch_size 4, window_size 7.
    """
    if len(depths) != len(num_heads):
        raise ConfigError(f"arch.depths and arch.num_heads need one entry per stage; got {list(depths)}, {list(num_heads)}")
    # every patch merging halves the grid: the last stage should still have a pixel per token
    require_image_size(f"swin_t (patch_size={patch_size})", image_size, patch_size * 2 ** (len(depths) - 1),
                       "resnet20s, small_cnn or mlp (or a smaller arch.patch_size)")
    net = SwinTransformer([patch_size] * 2, embed_dim, list(depths), list(num_heads), [window_size] * 2,
                          stochastic_depth_prob=stochastic_depth_prob, num_classes=num_classes)
    if in_channels != 3:
        net.features[0][0] = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
    return net
