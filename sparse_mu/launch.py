"""How a job's processes start: the DDP ranks of a sweep job, and the job number in log lines."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

# The overrides of the sweep job that is starting DDP ranks, for those ranks (`rank_argv`).
JOB_VAR = "SPARSE_MU_DDP_JOB"
MULTIRUN_FLAGS = ("-m", "--multirun")
# What Lightning's DDP launcher sets in the launching process; while set, Lightning takes the
# ranks as started already (the next job of a sweep would then start none).
LIGHTNING_VARS = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def export_job(overrides: Sequence[str], out_dir: Path, num: int) -> None:
    """Called by each sweep job: what its DDP ranks > 0 must run, in the environment that
    Lightning copies into them when it starts them."""
    args = [*overrides, f'hydra.run.dir="{out_dir}"', "hydra.output_subdir=null", f"hydra.job.num={num}"]
    os.environ[JOB_VAR] = json.dumps(args)


@contextmanager
def sweep_job(overrides: Sequence[str], out_dir: Path, num: int) -> Iterator[None]:
    """Around one job of a sweep: `export_job` for its DDP ranks; afterwards its DDP process
    group (if any) is closed and Lightning's variables are restored, so that the next job in this
    process starts ranks of its own (its ranks > 0 end with the job)."""
    before = {var: os.environ.get(var) for var in LIGHTNING_VARS}
    export_job(overrides, out_dir, num)
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for var, value in before.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def rank_argv(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The command line this process runs: `argv`, except for a DDP rank > 0 of a sweep job.

    Lightning's DDP strategy starts ranks 1..N-1 by running the launching command again
    (`sys.argv` plus `hydra.run.dir=...`). Under `-m` that command is the whole sweep, so each
    rank would launch every job (and write the report) again. Such a rank runs only the job that
    started it: that job's overrides (`export_job`) as a single run in the job's directory.
    """
    argv = list(argv)
    spawned = int(env.get("LOCAL_RANK", "0")) > 0 and JOB_VAR in env
    if not (spawned and any(a in MULTIRUN_FLAGS for a in argv[1:])):
        return argv
    rank = env["LOCAL_RANK"]
    return [argv[0], *json.loads(env[JOB_VAR]), f"hydra.job.name=train_ddp_process_{rank}"]


class JobTag(logging.Filter):
    """Gives every log record `job`: "[job N] " for job N of a sweep (Hydra's job number), ""
    for a single run. Configured in conf/hydra/default.yaml (`job_logging.filters`)."""

    def __init__(self, num: int | None = None):
        super().__init__()
        self.tag = "" if num is None else f"[job {num}] "

    def filter(self, record: logging.LogRecord) -> bool:
        record.job = self.tag
        return True
