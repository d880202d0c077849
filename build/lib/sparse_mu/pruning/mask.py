"""Masks: a 0/1 tensor per prunable weight, keyed by parameter name.

Plain tensors on purpose, not `torch.nn.utils.prune`: reparametrisation renames state-dict keys
and breaks deepcopy. Prunable by default: every Conv and Linear weight except the classifier
head (for the paper's ResNets: all convs including the stem and 1x1 shortcuts; not fc, BN or
biases). In transformers that is the patch embedding, the attention projections (including
`nn.MultiheadAttention`'s fused `in_proj_weight`, a Linear weight in all but name) and the MLP
weights; never norms, biases, position embeddings or the class token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from sparse_mu.errors import ConfigError

_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


def classifier_head(model: nn.Module) -> str:
    """Module name of the classifier head: the last Linear layer in registration order."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else ""


def prunable_weights(model: nn.Module, include_head: bool = False) -> dict[str, nn.Parameter]:
    """Parameter name -> weight of every Conv/Linear layer (the head only if asked)."""
    head = None if include_head else classifier_head(model)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, _PRUNABLE) and name != head and m.weight is not None:
            out[f"{name}.weight"] = m.weight
        elif isinstance(m, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                if getattr(m, attr, None) is not None:
                    out[f"{name}.{attr}"] = getattr(m, attr)
    return out


class Mask:
    """Per-parameter boolean keep-masks (True = weight kept)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = {k: v.detach().to(torch.bool) for k, v in tensors.items()}

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module) -> Mask:
        return cls({k: torch.ones_like(w, dtype=torch.bool) for k, w in prunable_weights(model).items()})

    @classmethod
    def from_weights(cls, model: nn.Module) -> Mask:
        """The mask a model's zeros describe."""
        return cls({k: w != 0 for k, w in prunable_weights(model).items()})

    @classmethod
    def from_scores(cls, scores: dict[str, torch.Tensor], sparsity: float, layerwise: bool = False) -> Mask:
        """Keep the highest scores: exactly round(sparsity * n) pruned, globally or per layer.

        Ties are broken by position so the count is exact.
        """
        if layerwise:
            return cls({k: next(iter(cls.from_scores({k: s}, sparsity).tensors.values())) for k, s in scores.items()})
        flat = torch.cat([s.detach().flatten() for s in scores.values()])  # keep float64 (SynFlow)
        n_prune = round(sparsity * flat.numel())
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
        if n_prune:
            keep[torch.topk(flat, n_prune, largest=False, sorted=False).indices] = False
        out, i = {}, 0
        for k, s in scores.items():
            out[k] = keep[i:i + s.numel()].view_as(s)
            i += s.numel()
        return cls(out)

    # -- checks and use ----------------------------------------------------------------------
    def validate(self, model: nn.Module) -> None:
        """Raise ConfigError unless every key is a parameter of `model` with the same shape."""
        params = dict(model.named_parameters())
        unknown = sorted(set(self.tensors) - set(params))
        if unknown:
            raise ConfigError(f"mask has keys the model lacks: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        wrong = [f"{k}: mask {tuple(m.shape)} vs weight {tuple(params[k].shape)}"
                 for k, m in self.tensors.items() if m.shape != params[k].shape]
        if wrong:
            raise ConfigError(f"mask shapes do not match the model: {wrong[:5]}")

    def pairs(self, model: nn.Module) -> Iterator[tuple[nn.Parameter, torch.Tensor]]:
        params = dict(model.named_parameters())
        for k, m in self.tensors.items():
            yield params[k], m

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of `model` in place."""
        self.validate(model)
        for p, m in self.pairs(model):
            p.mul_(m.to(p.device, p.dtype))
        return model

    def to(self, device: torch.device | str) -> Mask:
        return Mask({k: v.to(device) for k, v in self.tensors.items()})

    # -- statistics ------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        return sum(m.numel() for m in self.tensors.values())

    @property
    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.tensors.values()))

    @property
    def sparsity(self) -> float:
        """Fraction of masked-out weights among the masked parameters."""
        return 1.0 - self.kept / max(self.numel, 1)

    def layer_report(self) -> dict[str, dict[str, float]]:
        return {k: {"numel": m.numel(), "sparsity": 1.0 - float(m.float().mean())} for k, m in self.tensors.items()}

    # -- storage ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        torch.save(self.tensors, path)

    @classmethod
    def load(cls, path: str | Path) -> Mask:
        return cls(torch.load(path, map_location="cpu", weights_only=True))


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Percent zeros of each prunable weight of `model`, counted from the weights themselves."""
    return {k: 100.0 * float((w == 0).sum()) / w.numel() for k, w in prunable_weights(model).items()}


def weight_sparsity(model: nn.Module) -> float:
    """Zeros among the prunable weights of `model`, counted from the weights themselves."""
    weights = prunable_weights(model).values()
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(total, 1)
