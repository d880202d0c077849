"""What an unlearning run costs next to the Retrain reference, budgets relative to Retrain, and
the damage flag (ALGORITHMS.md section 7).

- Cost: optimiser steps as Lightning counted them (`trainer.global_step`), seconds of the loop,
  and for one-shot methods (no optimiser) the samples whose gradient they compute; the ratios
  to Retrain's are `cost_vs_retrain_steps` and `cost_vs_retrain_s`.
- Budget: `unlearner.budget` is a fraction of Retrain's optimiser steps; the method's epochs
  (and, when one epoch is already too many, a step limit) are derived from it and from the
  method's own batches per epoch, so GA, which works on D_f alone, counts its own steps.
- Damage: a run whose RA falls more than `eval.damage.ra_drop` points below Retrain's, or whose
  retain loss rose above `eval.damage.loss_ratio` times its starting value, is `damaged`.
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.utilities import CombinedLoader

from sparse_mu.errors import check

# A memorised model's retain loss starts near 0.001; ratios of such values are noise, so the
# loss criterion measures a jump from at least this value.
LOSS_FLOOR = 0.01


def batches_per_epoch(module: L.LightningModule, limit: int | float | None = None) -> int:
    """Training batches per epoch of `module`'s loader, as Lightning iterates it: a dict of
    loaders is cycled to its longest (max_size_cycle), a CombinedLoader has its own length;
    `limit` is `trainer.limit_train_batches` (a count, or a fraction of the epoch)."""
    loader = module.train_dataloader()
    if isinstance(loader, CombinedLoader):
        lengths = [len(v) for v in loader.flattened]
        n = {"min_size": min, "sequential": sum}.get(loader._mode, max)(lengths)
    else:
        n = max(len(v) for v in loader.values()) if isinstance(loader, dict) else len(loader)
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, int(n * limit))
    return min(n, int(limit)) if limit is not None else n


def planned_steps(module: L.LightningModule, limit: int | float | None = None) -> int:
    """Optimiser steps a loop of `module` will take: its epochs x batches per epoch (0 for a
    one-shot method, which has no optimiser)."""
    if not module.automatic_optimization:
        return 0
    return int(module.epochs) * batches_per_epoch(module, limit)


def steps_taken(module: L.LightningModule) -> int:
    """Optimiser steps of the module's last fit, as Lightning counted them (restored on resume)."""
    trainer = module._trainer  # kept after fit; None if the loop never ran
    return int(trainer.global_step) if trainer is not None else 0


def budget_schedule(budget: float, reference_steps: int, steps_per_epoch: int) -> tuple[int, int | None]:
    """(epochs, max_steps) that spend at most `budget` x `reference_steps` optimiser steps (at
    least one): whole epochs when one fits, else one epoch cut to the budget's steps."""
    check(budget > 0, "unlearner.budget", "a fraction of Retrain's steps > 0 (e.g. 0.1), or null", budget)
    steps = max(1, math.floor(budget * reference_steps))
    epochs = steps // steps_per_epoch
    return (epochs, None) if epochs >= 1 else (1, steps)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def cost_fields(steps: int, seconds: float, grad_samples: int | None, ref: dict | None) -> dict:
    """The cost columns of metrics.json. `ref` holds Retrain's `steps`, `RTE_s` and
    `batch_size` (None without the reference). One-shot methods (no steps) are compared by the
    samples whose gradient they compute against Retrain's steps x batch size."""
    ref = ref or {}
    ref_steps = ref.get("steps")
    out = {"steps": steps, "grad_samples": grad_samples, "retrain_steps": ref_steps,
           "cost_vs_retrain_steps": ratio(steps, ref_steps), "cost_vs_retrain_s": ratio(seconds, ref.get("RTE_s"))}
    if grad_samples is not None:
        ref_samples = ref_steps * ref["batch_size"] if ref_steps and ref.get("batch_size") else None
        out["cost_vs_retrain_steps"] = ratio(grad_samples, ref_samples)
    return out


def one_shot_samples(module: L.LightningModule) -> int | None:
    """Samples whose gradient a one-shot method computes: one per retain sample for Fisher
    forgetting; the gradient sums over D plus the WoodFisher recursion's m samples for IU.
    None for an iterative method (its cost is its steps)."""
    if module.automatic_optimization:
        return None
    retain, forget = len(module.indices("retain")), len(module.indices("forget"))
    if hasattr(module, "samples"):  # IU
        return retain + forget + min(int(module.samples), retain)
    return retain


def damage(ra: float, retrain_ra: float | None, loss_start: dict[str, float], loss_peak: dict[str, float],
           ra_drop: float, loss_ratio: float) -> list[str]:
    """Why a run is damaged (empty if it is not): RA more than `ra_drop` points below Retrain's,
    or a retain loss whose epoch mean rose above `loss_ratio` x its first batch's (at least
    LOSS_FLOOR)."""
    reasons = []
    if retrain_ra is not None and ra < retrain_ra - ra_drop:
        reasons.append(f"RA {ra:.2f} is {retrain_ra - ra:.2f} points below Retrain's {retrain_ra:.2f} "
                       f"(eval.damage.ra_drop={ra_drop:g})")
    for name, start in loss_start.items():
        peak = loss_peak.get(name)
        if "retain" in name and peak is not None and peak > loss_ratio * max(start, LOSS_FLOOR):
            reasons.append(f"{name} rose from {start:.4f} to an epoch mean of {peak:.4f} "
                           f"(> {loss_ratio:g}x; eval.damage.loss_ratio)")
    return reasons


def table_notes(m: dict) -> list[str]:
    """Lines under a run's results table: the cost next to Retrain's and the damage flag."""
    notes = []
    if m.get("retrain_steps"):
        work = f"{m['grad_samples']} sample gradients" if m.get("grad_samples") is not None else f"{m['steps']} steps"
        notes.append(f"cost vs Retrain: {work} / {m['retrain_steps']} steps ({m['cost_vs_retrain_steps']:.3f}), "
                     f"{m['RTE_s']:.2f} / {m['retrain']['RTE_s']:.2f} s ({m['cost_vs_retrain_s']:.3f})")
    elif "steps" in m:
        notes.append(f"cost: {m['steps']} steps, {m['RTE_s']:.2f} s (no Retrain reference)")
    if m.get("damaged"):
        notes.append("DAMAGED: " + "; ".join(m["damage"]))
    return notes
