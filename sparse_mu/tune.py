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

`python -m sparse_mu.tune STUDY_DIR ...` writes the tuned file of each finished study
(`conf/tuned/budget/<dataset>_<unlearner>_<pruner>.yaml`, `tuned_file`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from omegaconf import OmegaConf

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


def _trials(study_dir: Path) -> list[dict]:
    """Each trial of a finished study: its searched values (overrides), value and metrics."""
    out = []
    for d in sorted((p for p in study_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        overrides = yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
        cfg = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").exists() else {}
        m = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else None
        margin = float((cfg.get("tune") or {}).get("ra_margin", 1.0))
        out.append({"num": int(d.name), "overrides": overrides, "metrics": m,
                    "value": objective(m, margin) if m else FAILED})
    return out


def tuned_file(study_dir: str | Path, conf_dir: str | Path | None = None) -> Path:
    """Write `conf/tuned/budget/<dataset>_<unlearner>_<pruner>.yaml` from a finished study: the
    best trial's searched values, and in its comments the study, trials, budget, objective, best
    value and every trial."""
    study_dir = Path(study_dir)
    best = yaml.safe_load((study_dir / "optimization_results.yaml").read_text())
    hydra = OmegaConf.load(study_dir / "0" / ".hydra" / "hydra.yaml").hydra
    sweeper, choices = hydra.sweeper, hydra.runtime.choices
    trials = _trials(study_dir)
    cfg = yaml.safe_load((study_dir / "0" / "config.yaml").read_text())
    name = f"{choices['dataset']}_{choices['unlearner']}_{choices['pruner']}"
    params = {k.removeprefix("unlearner."): v for k, v in best["best_params"].items()}
    lines = [
        f"# Tuned by the Optuna study {sweeper['study_name']} (+experiment={choices.get('experiment')} "
        f"pruner={choices['pruner']}; docs/sweeps.md), written by `python -m sparse_mu.tune {study_dir}`.",
        f"# study: {sweeper['study_name']}, TPE (sampler seed {sweeper.sampler.get('seed')}), searched "
        + ", ".join(f"{k} {v}" for k, v in sweeper["params"].items()),
        f"# trials: {len(trials)} ({sum(t['metrics'] is None for t in trials)} failed), held-out seed "
        f"{cfg['seed']}, forget: {choices['forget']} {cfg['forget'].get('class_idx')}",
        f"# budget: unlearner.budget={cfg['unlearner'].get('budget')} of Retrain's steps",
        f"# objective: {cfg['tune']['objective']} (Disparity Avg; 100 + RA shortfall if RA is more than "
        f"{cfg['tune']['ra_margin']:g} point below Retrain's or the run is damaged; sparse_mu/tune.py), minimised",
        f"# best value: {best['best_value']:.4f}",
        "# every trial (value, Disparity Avg, UA, RA, Retrain RA, damaged):",
    ]
    for t in sorted(trials, key=lambda t: t["value"]):
        m = t["metrics"]
        searched = " ".join(o for o in t["overrides"] if o.split("=")[0] in sweeper["params"])
        stats = (f"DA {m['disparity_avg']:.2f}, UA {m['UA']:.1f}, RA {m['RA']:.1f}, Retrain RA "
                 f"{m['retrain']['RA']:.1f}, damaged {m['damaged']}") if m else "failed"
        lines.append(f"#   {searched}: {t['value']:.3f} ({stats})")
    body = {"budget": cfg["unlearner"].get("budget"), **params}
    text = "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False)
    out = Path(conf_dir or Path(__file__).parent / "conf") / "tuned" / "budget" / f"{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(f"wrote {tuned_file(arg)}")
