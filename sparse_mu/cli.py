"""The command line: `sparse-mu [group=option ...] [key=value ...]` (see --help).

Also `python -m sparse_mu` and, from a clone, `python run.py`. The configs ship in the package
(sparse_mu/conf/); outputs, the cache and data sets are relative to the working directory.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sparse_mu.failures import record
from sparse_mu.launch import rank_argv, sweep_job

log = logging.getLogger("sparse_mu")
os.environ.setdefault("WANDB_SILENT", "true")


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def _job(cfg: DictConfig) -> dict | float | None:
    from sparse_mu import pipeline
    from sparse_mu.cache import global_rank
    from sparse_mu.devices import gpu_for_job
    from sparse_mu.report import print_run
    from sparse_mu.tune import trial_value
    from sparse_mu.validation import validate

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    # a sweep job tells its DDP ranks > 0 (started by Lightning rerunning argv) to run only it
    job = sweep_job(hc.overrides.task, out_dir, hc.job.num) if multirun else nullcontext()
    try:
        validate(cfg)  # before gpu_for_job reads gpu_per_job (setup validates again: cheap)
        with job, gpu_for_job(cfg, hc.job.num if multirun else 0):
            metrics = pipeline.run(cfg, out_dir)
    except Exception as e:
        message = record(e, out_dir)  # FAILED: the one-line message, or the traceback of a bug
        if message:
            log.error("error: %s", message)
        else:
            log.exception("run failed; traceback in %s", out_dir / "FAILED")
        if hc.mode == RunMode.MULTIRUN:
            return trial_value(cfg, None)  # the sweep goes on; the report lists FAILED jobs
        sys.exit(1)
    if global_rank() == 0:  # under DDP every rank runs the job; one reports it
        print_run(metrics)
        log.info("results: %s", out_dir / "metrics.json")
    value = trial_value(cfg, metrics)  # a study's sweeper reads the objective (sparse_mu/tune.py)
    if value is not metrics:
        log.info("objective (%s): %.4f", cfg.tune.objective, value)
    return value


def main() -> None:
    """The command; a DDP rank > 0 of a sweep job runs only that job (`launch.rank_argv`)."""
    sys.argv = rank_argv(sys.argv, os.environ)
    _job()
