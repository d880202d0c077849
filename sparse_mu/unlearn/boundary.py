"""Boundary Shrink and Boundary Expand (Chen et al., "Boundary Unlearning", CVPR 2023)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu.errors import check
from sparse_mu.pruning import classifier_head
from sparse_mu.unlearn.base import Unlearner, UnlearnTask


class BoundaryShrink(Unlearner):
    """Fine-tune on D_f relabelled with each sample's nearest wrong class, found by a neighbour
    search: one FGSM step of size `bound` (in pixel units, 0-1) up the cross-entropy of a frozen
    copy of the original model, clipped to valid pixels; the label is that model's prediction
    on the perturbed image. As published, the label is used even where the step does not cross
    the boundary (it may then equal the true label). Published defaults: bound 0.1, SGD at lr
    1e-5 for 10 epochs (CIFAR-10).
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, bound: float = 0.1, node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        check(bound > 0, f"{node}.bound", "> 0 (the FGSM step in pixel units)", bound)
        self.require_forget()
        self.bound = bound
        self.attacked = copy.deepcopy(net).requires_grad_(False)
        data = task.data
        std, mean = data.std.view(1, -1, 1, 1).float(), data.mean.view(1, -1, 1, 1).float()
        # normalised images: valid pixels [0, 1] map to [low, high], a pixel step to step / std
        self.register_buffer("step", bound / std, persistent=False)
        self.register_buffer("low", -mean / std, persistent=False)
        self.register_buffer("high", (1 - mean) / std, persistent=False)

    def on_train_epoch_start(self) -> None:
        self.attacked.eval()

    def train_dataloader(self):
        return self.loader("forget")

    def neighbour_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The attacked model's prediction after one FGSM step from `x` away from `y`."""
        with torch.enable_grad():
            x_adv = x.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(self.attacked(x_adv), y), x_adv)
        x_adv = torch.maximum(torch.minimum(x + self.step * g.sign(), self.high), self.low)
        with torch.no_grad():
            return self.attacked(x_adv).argmax(-1)

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        loss = self.cross_entropy(x, self.neighbour_labels(x, y))
        self.log_loss("unlearn/forget_loss", loss)
        return loss


class BoundaryExpand(Unlearner):
    """The classifier gets one extra "shadow" output (a new row of the head, default init);
    the whole net is fine-tuned on D_f labelled with the shadow class, then the shadow output is
    dropped (the net keeps its original outputs). Published defaults: SGD at lr 1e-5, 10
    epochs (CIFAR-10).
    """

    def __init__(self, net: nn.Module, task: UnlearnTask, *, node: str = "unlearner", **loop):
        super().__init__(net, task, node=node, **loop)
        self.require_forget()
        head = dict(net.named_modules()).get(classifier_head(net))
        check(isinstance(head, nn.Linear), "arch", "a model whose classifier head is a Linear layer",
              type(head).__name__)
        torch.manual_seed(self.seed)
        self.shadow = nn.Linear(head.in_features, 1, bias=head.bias is not None)
        self._features: torch.Tensor | None = None
        self._hook = head.register_forward_hook(self._keep_features)

    def _keep_features(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._features = inputs[0]

    def on_train_end(self) -> None:
        self._hook.remove()  # the evaluated net is the original architecture, untouched
        self._features = None

    def parameters_to_train(self):
        return [*self.net.parameters(), *self.shadow.parameters()]

    def train_dataloader(self):
        return self.loader("forget")

    def training_step(self, batch, batch_idx):
        x, _, _ = batch
        logits = self.net(x)
        widened = torch.cat([logits, self.shadow(self._features).to(logits.dtype)], dim=-1)
        shadow_class = torch.full_like(batch[1], logits.shape[-1])
        loss = F.cross_entropy(widened, shadow_class, label_smoothing=self.label_smoothing)
        self.log_loss("unlearn/shadow_loss", loss)
        return loss
