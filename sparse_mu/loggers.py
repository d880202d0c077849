"""The run's loggers: CSV and Weights & Biases, built from the `logger` config group."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from sparse_mu.config import build
from sparse_mu.metrics import GAP_KEYS, NESTED


def job_loggers(cfg: DictConfig, out_dir: Path, names: dict[str, str]) -> list[Logger]:
    """The configured loggers (CSV, W&B, ...) writing into the run directory; `names`: the
    option chosen in each config group."""
    loggers = []
    for node in cfg.logger.values():
        if node is None or "_target_" not in node:  # e.g. a preset's logger.wandb.group after logger=csv
            continue
        if not node._target_.endswith("WandbLogger"):
            loggers.append(build(node, save_dir=str(out_dir)))
            continue
        tags = [f"{g}={v}" for g, v in names.items()] + [f"seed={int(cfg.seed)}"]
        group = node.get("group")
        if group is None and HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
            # one W&B group per sweep: the preset's name, else the sweep directory's
            hc = HydraConfig.get()
            group = hc.runtime.choices.get("experiment") or Path(hc.sweep.dir).name
        name = node.get("name") or f"{names['unlearner']}-{names['pruner']}-{names['forget']}-s{int(cfg.seed)}"
        loggers.append(build(node, save_dir=str(out_dir), name=name, group=group, tags=tags,
                             config=OmegaConf.to_container(cfg, resolve=True)))
    return loggers


def finish_loggers(loggers: list[Logger], metrics: dict, status: str) -> None:
    """Final metrics and the results table to every logger; W&B is finished either way."""
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name in NESTED:
        flat.update({f"{name}/{k}": v for k, v in (metrics.get(name) or {}).items() if isinstance(v, (int, float))})
    for lg in loggers:
        if metrics:
            lg.log_metrics({f"final/{k}": v for k, v in flat.items()})
            if isinstance(lg, WandbLogger):
                lg.experiment.summary.update(flat)
                rows = [[k, metrics["original"].get(k), metrics.get(k), (metrics["retrain"] or {}).get(k),
                         (metrics["gap"] or {}).get(k)] for k in GAP_KEYS]
                lg.log_table("results", columns=["metric", "original", "unlearned", "retrain", "gap"], data=rows)
        lg.finalize(status)
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish(exit_code=0 if status == "success" else 1)
