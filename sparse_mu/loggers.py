"""The run's loggers: CSV and Weights & Biases, built from the `logger` config group.

W&B runs are named for what they ran (`run_name`), tagged with every chosen config option
(`run_tags`), get the resolved config once at `wandb.init` (nested, as `config.yaml`), a loss
curve per stage (`log_stage_curves`) and the final metrics once, in the summary.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import lightning.pytorch.loggers as pl_loggers
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from sparse_mu.config import build
from sparse_mu.metrics import GAP_KEYS, NESTED

# Command-line keys that say where or how a job runs, not what it computes: not in run names.
_OPERATIONAL = ("paths", "hydra", "logger", "callbacks", "experiment", "gpu_per_job", "checkpoint_every")
# Config groups whose choice is operational or internal (tuned files, the reference's node): no tags.
_UNTAGGED = ("logger", "callbacks", "paths", "tuned")


class WandbLogger(pl_loggers.WandbLogger):
    """Lightning's W&B logger without the `anonymous` argument it always passes to `wandb.init`:
    W&B deprecated that setting and warns on every run that sets it, even to None."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)


def _percent(fraction) -> str:
    return f"{100 * float(fraction):g}"


def run_name(cfg: DictConfig, names: dict[str, str], overrides: list[str]) -> str:
    """`<unlearner>-<pruner><sparsity %>-<forget set>-s<seed>`, then every command-line
    override (Hydra's `hydra.overrides.task`; under `-m`, the job's swept values) that the name
    does not already show, e.g. `ft-omp90-class0-s0 unlearner.lr=0.01`."""
    shown = {"unlearner", "pruner", "forget", "seed"}
    pruner = names["pruner"]
    if cfg.pruner.get("sparsity") is not None and pruner != "dense":
        pruner += _percent(cfg.pruner.sparsity)
        shown.add("pruner.sparsity")
    forget = names["forget"]
    if cfg.forget.get("class_idx") is not None:
        idx = cfg.forget.class_idx
        forget += "+".join(map(str, idx)) if OmegaConf.is_list(idx) else str(idx)
        shown.add("forget.class_idx")
    elif cfg.forget.get("fraction") is not None and cfg.forget.get("count") is None:
        forget += _percent(cfg.forget.fraction) + "%"
        shown.add("forget.fraction")
    extra = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in shown and key.split(".")[0].split("/")[0] not in _OPERATIONAL:
            extra.append(override.lstrip("+"))
    return " ".join([f"{names['unlearner']}-{pruner}-{forget}-s{int(cfg.seed)}", *extra])


def run_tags(cfg: DictConfig, chosen: dict[str, str | None]) -> list[str]:
    """`group=option` for every chosen config group (tuning, debug, experiment included), the
    target sparsity and the seed."""
    tags = [f"{g}={v}" for g, v in chosen.items()
            if v is not None and v != "None" and "@" not in g and not g.startswith("hydra/")
            and g not in _UNTAGGED]
    if cfg.pruner.get("sparsity") is not None:
        tags.append(f"sparsity={_percent(cfg.pruner.sparsity)}")
    return [*tags, f"seed={int(cfg.seed)}"]


def job_loggers(cfg: DictConfig, out_dir: Path, names: dict[str, str]) -> list[Logger]:
    """The configured loggers (CSV, W&B, ...) writing into the run directory; `names`: the
    option chosen in each config group."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    chosen = {**names, **dict(hydra.runtime.choices)} if hydra else dict(names)
    overrides = list(hydra.overrides.task) if hydra else []
    loggers = []
    for node in cfg.logger.values():
        if node is None or "_target_" not in node:  # e.g. a preset's logger.wandb.group after logger=csv
            continue
        if not node._target_.endswith("WandbLogger"):
            loggers.append(build(node, save_dir=str(out_dir)))
            continue
        if os.environ.get("WANDB_MODE") == "disabled" or node.get("mode") == "disabled":
            # W&B writes nothing then, but importing it and its no-op run took seconds per job
            continue
        group = node.get("group")
        if group is None and hydra is not None and hydra.mode.name == "MULTIRUN":
            # one W&B group per sweep: the preset's name, else the sweep directory's
            group = hydra.runtime.choices.get("experiment") or Path(hydra.sweep.dir).name
        loggers.append(build(node, save_dir=str(out_dir), name=node.get("name") or run_name(cfg, names, overrides),
                             group=group, tags=run_tags(cfg, chosen),
                             config=OmegaConf.to_container(cfg, resolve=True)))
    return loggers


def _wandb_runs(loggers: list[Logger]) -> list:
    return [lg.experiment for lg in loggers if isinstance(lg, pl_loggers.WandbLogger)]


def log_stage_curves(loggers: list[Logger], stages: dict[str, Path | None]) -> None:
    """The losses of the cached stages, read from the CSV logs of their artifacts (`stages`:
    prefix -> artifact folder), to W&B, each stage under its prefix and against its own epoch
    axis (1..E): `base/train/loss`, `prune1/train/loss` (one per retraining round),
    `reference/retain_loss`. The unlearning loop logs `unlearn/*` itself, live."""
    runs = _wandb_runs(loggers)
    if not runs:
        return
    for stage, folder in stages.items():
        for path in sorted(folder.glob("logs/**/metrics.csv")) if folder is not None else ():
            prefix = stage
            if path.parent.name.startswith("round"):  # prune rounds: logs/round<i>/metrics.csv
                prefix += str(int(path.parent.name.removeprefix("round")) + 1)
            with path.open() as f:
                rows = list(csv.DictReader(f))
            keys = {k for row in rows for k, v in row.items() if v and k not in ("epoch", "step")}
            axis = f"{prefix}/epoch"
            for run in runs:
                run.define_metric(axis)
                for key in keys:
                    run.define_metric(f"{prefix}/{key.removeprefix('unlearn/')}", step_metric=axis)
            for row in rows:
                values = {f"{prefix}/{k.removeprefix('unlearn/')}": float(row[k]) for k in keys if row.get(k)}
                if values:
                    for run in runs:
                        run.log({axis: int(row["epoch"]) + 1, **values})


def finish_loggers(loggers: list[Logger], metrics: dict, status: str) -> None:
    """Final metrics to every logger (W&B: once, in the run's summary, and the results table);
    W&B is finished either way."""
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name in NESTED:
        flat.update({f"{name}/{k}": v for k, v in (metrics.get(name) or {}).items() if isinstance(v, (int, float))})
    for lg in loggers:
        if metrics and isinstance(lg, pl_loggers.WandbLogger):
            lg.experiment.summary.update(flat)
            rows = [[k, metrics["original"].get(k), metrics.get(k), (metrics["retrain"] or {}).get(k),
                     (metrics["gap"] or {}).get(k)] for k in GAP_KEYS]
            lg.log_table("results", columns=["metric", "original", "unlearned", "retrain", "gap"], data=rows)
        elif metrics:
            lg.log_metrics({f"final/{k}": v for k, v in flat.items()})
        lg.finalize(status)
    if any(isinstance(lg, pl_loggers.WandbLogger) for lg in loggers):
        import wandb

        wandb.finish(exit_code=0 if status == "success" else 1)
