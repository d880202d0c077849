"""One GPU per job when a sweep runs several jobs at once on a multi-GPU machine."""

from __future__ import annotations

import logging
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


def claim_gpu(count: int, start: int = 0, lock_dir: Path = LOCK_DIR, poll_s: float = 2.0) -> tuple[int, FileLock]:
    """Wait for a GPU no other job on this machine holds; returns its index and the held lock.

    Jobs start their search at their own job number, so a fresh sweep spreads out at once.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(count):
            gpu = (start + i) % count
            lock = FileLock(str(lock_dir / f"gpu{gpu}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            return gpu, lock
        time.sleep(poll_s)


@contextmanager
def gpu_for_job(cfg: DictConfig, job_num: int, count: int | None = None) -> Iterator[int | None]:
    """Pin this job to a free GPU (`trainer.devices=[k]`) if `gpu_per_job` is on, the trainer
    wants one device and more than one GPU is visible; otherwise leave everything as it is."""
    count = torch.cuda.device_count() if count is None else count
    wants_one = cfg.trainer.get("devices") in (1, "1") and cfg.trainer.get("strategy") in ("auto", None)
    if not (cfg.get("gpu_per_job") and wants_one and count > 1 and cfg.trainer.accelerator in ("auto", "gpu", "cuda")):
        yield None
        return
    gpu, lock = claim_gpu(count, start=job_num)
    try:
        if torch.cuda.is_available():
            torch.cuda.set_device(gpu)
        with open_dict(cfg):
            cfg.trainer.devices = [gpu]
        log.info("job %d runs on GPU %d", job_num, gpu)
        yield gpu
    finally:
        lock.release()
