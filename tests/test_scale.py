"""Sweeps and scale: shared cache across processes, failed jobs, W&B, DDP on CPU."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sparse_mu import pipeline
from sparse_mu.cache import ArtifactCache
from tests.conftest import ROOT, TINY, compose_cfg


def _build_once(root: str, log: str) -> str:
    def make(work: Path, ckpt: Path) -> dict:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.0)  # long enough that the other process arrives while this one builds
        (work / "w.txt").write_text("weights")
        return {}

    art = ArtifactCache(root).get_or_build("base", {"x": 1}, make)
    return (art.path / "w.txt").read_text()


def test_two_processes_build_an_artifact_once(tmp_path):
    log = tmp_path / "builds.log"
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_build_once, [(str(tmp_path / "cache"), str(log))] * 2)
    assert results == ["weights", "weights"]
    assert log.read_text().count("built") == 1
    assert not list((tmp_path / "cache" / "base").glob("*.partial"))


def test_failed_jobs_are_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2", *TINY,
         "pruner=dense", "unlearner=ft,retrain", "forget.class_idx=1,99",
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a job failed: the sweep says so
    finished = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    failed = sorted(p.parent.name for p in sweep.glob("*/FAILED"))
    assert len(finished) == 2 and len(failed) == 2
    assert all("forget.class_idx must be an integer in [0, 9]" in (sweep / f / "FAILED").read_text() for f in failed)
    report = (sweep / "report.md").read_text()
    assert "Failed runs (2)" in report and "forget.class_idx=99" in report
    # two parallel jobs needed the same base model: it was built once
    assert len(list((tmp_path / "cache" / "base").glob("*/meta.json"))) == 1


def test_wandb_offline_run(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")  # what it tests; a disabled W&B is not built at all

    finished = []
    real_finish = wandb.finish
    monkeypatch.setattr(wandb, "finish", lambda exit_code=None, **k: finished.append(exit_code) or real_finish(exit_code=exit_code))
    cfg = compose_cfg([*TINY, "logger=default", "logger.wandb.group=g1", "pruner=dense"], tmp_path)
    out = tmp_path / "run"
    m = pipeline.run(cfg, out)
    assert finished == [0]
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    assert (out / "csv" / "metrics.csv").read_text().count("final/UA") == 1
    assert m["UA"] >= 0


def test_ddp_on_cpu_two_processes(tmp_path):
    out, temp = tmp_path / "run", tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.run(
        [sys.executable, "run.py", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *TINY,
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(temp)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not [p.name for p in temp.iterdir() if p.name.startswith("sparse_mu-")]  # rank 1 left nothing
    m = json.loads((out / "metrics.json").read_text())
    assert m["sparsity"] == pytest.approx(95.0, abs=0.01)
    assert proc.stdout.count("results:") == 1  # one rank reports
    cfg = OmegaConf.load(out / "config.yaml")
    assert cfg.trainer.strategy == "ddp"
    # each rank takes half of D per epoch: 648 samples, 11 steps of 64 (not 21) per epoch
    log = next((tmp_path / "cache").glob("base/*/logs/metrics.csv")).read_text().splitlines()
    last_step = int(log[-1].split(",")[log[0].split(",").index("step")])
    assert last_step + 1 == 6 * 11


def test_table3_tiny_sweep_trains_each_base_model_once(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "+experiment=table3_tiny", *TINY,
         "unlearner=retrain,ft,ga,l1_sparse", "seed=0,1",  # four of the preset's rows, two of its seeds
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = list(sweep.glob("*/metrics.json"))
    assert len(jobs) == 2 * 2 * 4 * 2  # pruners x forgetting settings x methods x seeds
    cache = tmp_path / "cache"
    assert len(list(cache.glob("base/*/meta.json"))) == 2  # one dense model per seed
    assert len(list(cache.glob("prune/*/meta.json"))) == 2  # one OMP model per seed
    assert len(list(cache.glob("reference/*/meta.json"))) == 2 * 2 * 2  # per (model, forget set, seed)
    assert proc.stdout.count("base: built and cached") == 2
    report = (sweep / "report.md").read_text()
    assert "## digits / small_cnn, forget: class" in report and "## digits / small_cnn, forget: random" in report
    for method in ("| retrain |", "| ft |", "| ga |", "| l1_sparse |"):
        assert method in report
    assert list(sweep.glob("metrics_*.png"))
