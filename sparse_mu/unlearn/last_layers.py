"""EU-k and CF-k (Goel et al., "Towards adversarial evaluations for inexact machine unlearning"):
retrain from scratch, or fine-tune, only the last k layers on D_r."""

from __future__ import annotations

from torch import nn

from sparse_mu.errors import check
from sparse_mu.unlearn.bad_teacher import reset_parameters
from sparse_mu.unlearn.base import UnlearnTask
from sparse_mu.unlearn.ft import FineTune

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def last_layers(net: nn.Module, k: int) -> list[str]:
    """Names of the modules that make up the last `k` layers: the last `k` Conv/Linear modules
    in registration order (the classifier head is the last one) and every normalisation module
    registered after the first of them."""
    modules = list(net.named_modules())
    layers = [i for i, (_, m) in enumerate(modules) if isinstance(m, _LAYERS)]
    first = layers[-k]
    return [name for i, (name, m) in enumerate(modules)
            if (i in layers[-k:]) or (i > first and isinstance(m, _NORMS))]


class LastLayersFineTune(FineTune):
    """CF-k: cross-entropy on D_r updating only the last `k` layers; every other parameter is
    frozen and every other module stays in eval mode (its BatchNorm statistics do not move)."""

    def __init__(self, net: nn.Module, task: UnlearnTask, *, k: int = 3, node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        n_layers = sum(isinstance(m, _LAYERS) for m in net.modules())
        check(isinstance(k, int) and 1 <= k <= n_layers, f"{node}.k",
              f"an integer in [1, {n_layers}] (the net's Conv/Linear layers)", k)
        self.k = k
        self.trained = last_layers(net, k)
        trained = {f"{name}." for name in self.trained}
        for name, p in net.named_parameters():
            p.requires_grad_(any(name.startswith(prefix) for prefix in trained))

    def on_train_epoch_start(self) -> None:
        self.net.eval()
        modules = dict(self.net.named_modules())
        for name in self.trained:
            modules[name].train()


class LastLayersRetrain(LastLayersFineTune):
    """EU-k: the last `k` layers re-initialised (seeded by the job seed; the mask re-applied),
    then trained on D_r as CF-k trains them: the exact unlearner when the frozen layers never
    saw D_f, an approximation otherwise."""

    def __init__(self, net: nn.Module, task: UnlearnTask, **kwargs):
        super().__init__(net, task, **kwargs)
        modules = dict(net.named_modules())
        reset_parameters([modules[name] for name in self.trained], self.seed)
        if task.mask is not None:
            task.mask.apply_(net)
