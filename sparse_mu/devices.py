"""One GPU per job when a sweep runs several jobs at once on a multi-GPU machine.

A job narrows `CUDA_VISIBLE_DEVICES` to the GPU it claimed, so it sees that GPU alone (as
`cuda:0`). CUDA reads the variable once per process, when it initialises, and the joblib
launcher's loky workers run one job after another: a worker therefore keeps the GPU its first
job took, and its later jobs claim that same GPU again (waiting for it if another worker's job
holds it) instead of running on another GPU through an old CUDA context.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, open_dict

log = logging.getLogger("sparse_mu")
LOCK_DIR = Path(tempfile.gettempdir()) / "sparse_mu_gpu_locks"  # per machine, not on a shared disk
ALL_GPUS_VAR = "SPARSE_MU_GPUS"  # the GPUs this process could see before it narrowed CUDA_VISIBLE_DEVICES
PINNED_VAR = "SPARSE_MU_PINNED_GPU"  # the GPU this process narrowed CUDA_VISIBLE_DEVICES to


def visible_gpus(count: int | None = None) -> list[str]:
    """The `CUDA_VISIBLE_DEVICES` ids of the GPUs jobs may share, as this process first saw them
    (`count`: the number of GPUs, default torch's count)."""
    if ALL_GPUS_VAR not in os.environ:
        count = torch.cuda.device_count() if count is None else count
        listed = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [g.strip() for g in listed.split(",")][:count] if listed else [str(i) for i in range(count)]
        os.environ[ALL_GPUS_VAR] = ",".join(ids)
    return [g for g in os.environ[ALL_GPUS_VAR].split(",") if g]


def claim_gpu(count: int, start: int = 0, lock_dir: Path = LOCK_DIR, poll_s: float = 2.0,
              only: int | None = None) -> tuple[int, FileLock]:
    """Wait for a GPU no other job on this machine holds (or for GPU `only`); returns its index
    and the held lock.

    Jobs start their search at their own job number, so a fresh sweep spreads out at once.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    order = [only] if only is not None else [(start + i) % count for i in range(count)]
    while True:
        for gpu in order:
            lock = FileLock(str(lock_dir / f"gpu{gpu}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            return gpu, lock
        time.sleep(poll_s)


@contextmanager
def gpu_for_job(cfg: DictConfig, job_num: int, count: int | None = None) -> Iterator[int | None]:
    """Pin this job to a free GPU (`CUDA_VISIBLE_DEVICES=<it>`) if `gpu_per_job` is on, the
    trainer wants one device and more than one GPU is visible; otherwise leave everything as it
    is. Yields the GPU's index among `visible_gpus()`, or None."""
    wants_one = cfg.trainer.get("devices") in (1, "1") and cfg.trainer.get("strategy") in ("auto", None)
    accel = cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    if not (cfg.get("gpu_per_job") and wants_one and accel):
        yield None
        return
    gpus = visible_gpus(count)
    if len(gpus) <= 1:
        yield None
        return
    pinned = os.environ.get(PINNED_VAR)
    only = None if pinned is None else gpus.index(pinned)
    gpu, lock = claim_gpu(len(gpus), start=job_num, lock_dir=LOCK_DIR, only=only)
    try:
        if pinned is None and torch.cuda.is_initialized():  # too late to narrow what CUDA sees
            torch.cuda.set_device(gpu)
            with open_dict(cfg):
                cfg.trainer.devices = [gpu]
            log.warning("job %d runs on GPU %d (CUDA was initialised before the job chose it)", job_num, gpu)
        else:
            os.environ[PINNED_VAR] = os.environ["CUDA_VISIBLE_DEVICES"] = gpus[gpu]
            log.info("job %d runs on GPU %s (CUDA_VISIBLE_DEVICES=%s)", job_num, gpus[gpu], gpus[gpu])
        yield gpu
    finally:
        lock.release()
