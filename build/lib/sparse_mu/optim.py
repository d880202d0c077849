"""Sharpness-aware minimisation as an optimiser wrapper."""

from __future__ import annotations

from collections.abc import Callable

import torch


class SAM(torch.optim.Optimizer):
    """SAM (Foret et al. 2021); `adaptive` is ASAM (Kwon et al. 2021), whose perturbation is
    scaled by |w| per coordinate. The paper's profile: SGD base, rho 2.0, adaptive.

    `step(closure)` calls the closure twice: at w for the ascent direction, then at
    w + e(w) for the gradient the base optimiser applies at w. The closure must zero the
    gradients, compute the loss and back-propagate (Lightning's automatic optimisation does,
    and runs `on_after_backward` each time, so a mask on the gradients holds in both passes:
    pruned weights get no perturbation and no update). The base optimiser's state is shared, so
    callbacks that edit `optimizer.state` (momentum of pruned weights) reach it.
    """

    def __init__(self, params, base: type[torch.optim.Optimizer] = torch.optim.SGD, *, rho: float = 2.0,
                 adaptive: bool = True, **base_kwargs):
        if rho < 0:
            raise ValueError(f"SAM's rho must be >= 0; got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [((p.abs() if g["adaptive"] else 1.0) * p.grad).norm(2)
                 for g in self.param_groups for p in g["params"] if p.grad is not None]
        return torch.stack(norms).norm(2) if norms else torch.zeros(())

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        if closure is None:
            raise RuntimeError("SAM needs a closure that recomputes the loss and its gradients; Lightning "
                               "gives none with gradient scaling (trainer.precision=16-mixed): use 32-true or bf16-mixed")
        closure = torch.enable_grad()(closure)
        loss = closure()
        scale = 1.0 / (self._grad_norm() + 1e-12)
        at_w = []
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                at_w.append((p, p.detach().clone()))  # a copy, not w + e - e: exact, pruned zeros stay 0
                p.add_((p.square() if g["adaptive"] else 1.0) * p.grad * (g["rho"] * scale).to(p))
        closure()
        for p, w in at_w:
            p.copy_(w)
        self.base_optimizer.step()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # replaces state and param_groups: share them again
        self.base_optimizer.param_groups = self.param_groups
        self.base_optimizer.state = self.state
