"""How jobs start: one GPU per parallel job, DDP ranks of a sweep job, the job number in logs,
and DDP ranks > 0 leaving nothing in the temp directory."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lightning.fabric.utilities.rank_zero import rank_zero_only

from sparse_mu import devices
from sparse_mu.cache import ArtifactCache, global_rank
from sparse_mu.devices import claim_gpu, gpu_for_job
from sparse_mu.launch import JOB_VAR, LIGHTNING_VARS, JobTag, export_job, rank_argv, sweep_job
from tests.conftest import ROOT, TINY, compose_cfg


@pytest.fixture
def gpu_env(tmp_path, monkeypatch):
    """No GPU variables set (restored afterwards), GPU locks under tmp_path."""
    for var in ("CUDA_VISIBLE_DEVICES", devices.ALL_GPUS_VAR, devices.PINNED_VAR):
        monkeypatch.setenv(var, "")  # recorded, so the test's changes are undone
        monkeypatch.delenv(var)
    monkeypatch.setattr(devices, "LOCK_DIR", tmp_path / "locks")
    monkeypatch.setattr(devices.torch.cuda, "is_initialized", lambda: False)


def test_each_job_sees_only_its_gpu(gpu_env):
    cfg = compose_cfg(["trainer.accelerator=gpu"])
    with gpu_for_job(cfg, job_num=2, count=4) as gpu:
        assert gpu == 2 and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
        assert cfg.trainer.devices == 1  # the one visible GPU: the config (and cache keys) unchanged
        assert claim_taken(2)  # held for the whole job


def claim_taken(gpu: int) -> bool:
    """Whether another process finds GPU `gpu` taken."""
    code = ("import sys; from filelock import FileLock, Timeout\n"
            "try: FileLock(sys.argv[1]).acquire(timeout=0)\nexcept Timeout: sys.exit(3)")
    return subprocess.run([sys.executable, "-c", code, str(devices.LOCK_DIR / f"gpu{gpu}.lock")]).returncode == 3


def test_a_reused_worker_keeps_its_gpu(gpu_env):
    """loky reuses workers: the second job in a process must not move to another GPU."""
    cfg = compose_cfg(["trainer.accelerator=gpu"])
    os.environ["CUDA_VISIBLE_DEVICES"] = "4,6"  # ids as the machine lists them
    with gpu_for_job(cfg, job_num=1, count=2) as gpu:
        assert gpu == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    with gpu_for_job(cfg, job_num=0, count=2) as gpu:  # job 0 would start at GPU 4
        assert gpu == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    assert devices.visible_gpus() == ["4", "6"]


def test_only_single_device_gpu_jobs_are_pinned(gpu_env):
    with gpu_for_job(compose_cfg(["trainer.accelerator=gpu"]), job_num=3, count=1) as gpu:
        assert gpu is None  # one GPU: nothing to choose
    with gpu_for_job(compose_cfg(["trainer=ddp", "trainer.accelerator=gpu"]), job_num=3, count=4) as gpu:
        assert gpu is None  # DDP uses every device itself
    with gpu_for_job(compose_cfg(["trainer.accelerator=cpu"]), job_num=3, count=4) as gpu:
        assert gpu is None
    with gpu_for_job(compose_cfg(["trainer.accelerator=gpu", "gpu_per_job=false"]), job_num=3, count=4) as gpu:
        assert gpu is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_gpu_claims_are_distinct_and_a_pinned_claim_waits(tmp_path):
    a, lock_a = claim_gpu(2, start=0, lock_dir=tmp_path)
    b, lock_b = claim_gpu(2, start=0, lock_dir=tmp_path)  # GPU 0 is taken: gets the other one
    assert {a, b} == {0, 1}
    got = []
    waiter = threading.Thread(target=lambda: got.append(claim_gpu(2, lock_dir=tmp_path, poll_s=0.01, only=b)))
    waiter.start()
    time.sleep(0.3)
    assert not got  # GPU b is held; GPU a is free but not this worker's
    lock_b.release()
    waiter.join(5)
    assert got and got[0][0] == b
    got[0][1].release()
    lock_a.release()


def test_a_ddp_rank_of_a_sweep_job_runs_only_that_job(monkeypatch, tmp_path):
    monkeypatch.setenv(JOB_VAR, "")
    export_job(["unlearner=ga", "seed=1"], tmp_path / "3", 3)
    env = {"LOCAL_RANK": "1", JOB_VAR: os.environ[JOB_VAR]}
    sweep = ["run.py", "-m", "unlearner=ft,ga", "seed=0,1", 'hydra.run.dir="x"']  # as Lightning reruns it
    assert rank_argv(sweep, env) == ["run.py", "unlearner=ga", "seed=1", f'hydra.run.dir="{tmp_path / "3"}"',
                                     "hydra.output_subdir=null", "hydra.job.num=3",
                                     "hydra.job.name=train_ddp_process_1"]
    assert rank_argv(sweep, {**env, "LOCAL_RANK": "0"}) == sweep  # the sweep itself
    assert rank_argv(sweep, {"LOCAL_RANK": "1"}) == sweep
    single = ["run.py", "trainer=ddp", 'hydra.run.dir="x"']  # a DDP rank of a single run: as Lightning starts it
    assert rank_argv(single, env) == single


def test_a_sweep_job_restores_what_lightning_set_for_its_ranks(monkeypatch, tmp_path):
    for var in (*LIGHTNING_VARS, JOB_VAR):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setenv("NODE_RANK", "0")
    with sweep_job(["seed=1"], tmp_path, 1):
        assert json.loads(os.environ[JOB_VAR])[0] == "seed=1"
        os.environ.update(LOCAL_RANK="0", NODE_RANK="0", WORLD_SIZE="2", MASTER_PORT="1234")  # as Lightning does
    assert not [v for v in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT") if v in os.environ]
    assert os.environ["NODE_RANK"] == "0"  # what was there before stays


def test_log_lines_carry_the_job_number():
    record = logging.LogRecord("sparse_mu", logging.INFO, __file__, 1, "hello", None, None)
    fmt = logging.Formatter("%(job)s%(message)s")
    assert JobTag(3).filter(record) and fmt.format(record) == "[job 3] hello"
    assert JobTag(None).filter(record) and fmt.format(record) == "hello"


def test_ddp_rank_builds_in_a_removed_temp_dir_then_uses_rank_0s(tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert global_rank() == 1
    cache = ArtifactCache(tmp_path / "cache")
    seen: list[Path] = []

    def make(work: Path, ckpt: Path) -> dict:
        seen.append(work)
        (work / "w.txt").write_text("rank 1")
        return {}

    def make0(work: Path, ckpt: Path) -> dict:
        (work / "w.txt").write_text("rank 0")
        return {}

    def publish() -> None:  # rank 0, a little later: what it runs in get_or_build
        time.sleep(0.3)
        key = cache.key({"x": 1})
        cache._build("base", key, {"x": 1}, make0, cache.root / "base" / key)

    rank0 = threading.Thread(target=publish)
    rank0.start()
    art = cache.get_or_build("base", {"x": 1}, make)
    rank0.join()
    assert seen and seen[0].parent == temp and not seen[0].exists()
    assert art.file("w.txt").read_text() == "rank 0"
    assert list(temp.iterdir()) == []


@pytest.mark.slow
def test_ddp_sweep_launches_once_and_leaves_no_temp_files(tmp_path):
    """`-m` with DDP: Lightning reruns the command for rank 1, which must run only its job."""
    sweep, temp = tmp_path / "sweep", tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *TINY,
         "pruner=dense", "unlearner=ft,ga", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "TMPDIR": str(temp)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert out.count("Launching 2 jobs") == 1
    assert out.count("sweep: 2 runs finished") == 1  # the report, written once
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1"]
    assert not list(sweep.glob("*/*/metrics.json"))  # rank 1 wrote no run directories of its own
    assert "[job 1] " in (sweep / "1" / "run.log").read_text()
    assert not [p.name for p in temp.iterdir() if p.name.startswith("sparse_mu-")]
