"""The objective a tuning study minimises, computed from one run's metrics (docs/sweeps.md).

A study is a Hydra multirun with the Optuna sweeper (`+experiment=tune_<dataset>_<method>`): the
sweeper reads each trial's value from the job's return value, so with `tune.objective` set the
job returns `objective(metrics, ...)`, a float, instead of its metrics dict.

`disparity_ra` (the only objective): the Disparity Average (mean |gap to Retrain| over UA,
MIA-Efficacy, RA and TA, in points) of a run that is not damaged. A damaged model must not win
on a low Disparity Average, so the RA constraint is a penalty that ranks every violating run
below every valid one (the Disparity Average is at most 100):

- the run is flagged `damaged` (RA more than `eval.damage.ra_drop` points below Retrain's, or a
  retain-loss spike), or its RA is more than `tune.ra_margin` (default 1) points below Retrain's:
  value = 100 + the RA shortfall in points (so a less damaged run still ranks above a worse one);
- a trial that fails (diverges, raises): value = `FAILED` (300).
"""

from __future__ import annotations

import math

OBJECTIVES = ("disparity_ra",)
PENALTY = 100.0  # added to a constrained-out run's RA shortfall: worse than any Disparity Average
FAILED = 300.0   # the value of a trial that raised (the report lists it as failed)


def objective(m: dict, ra_margin: float = 1.0) -> float:
    """The value `disparity_ra` gives a finished run's metrics (lower is better)."""
    da = m.get("disparity_avg")
    ref = m.get("retrain") or {}
    if da is None or "RA" not in ref:
        raise ValueError("tune.objective needs the Retrain reference (eval.retrain_reference=true)")
    shortfall = float(ref["RA"]) - float(m["RA"])
    if m.get("damaged") or shortfall > ra_margin or math.isnan(float(da)):
        return PENALTY + max(shortfall, 0.0)
    return float(da)


def trial_value(cfg, metrics: dict | None):
    """What the job returns to Hydra: the metrics, or under `tune.objective` the study's value
    (`FAILED` for a run that raised, so the sampler learns to avoid that region)."""
    tune = cfg.get("tune") or {}
    if not tune.get("objective"):
        return metrics
    if metrics is None:
        return FAILED
    return objective(metrics, float(tune.get("ra_margin", 1.0)))
