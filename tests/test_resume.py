"""Nothing is lost: a killed run resumes from its checkpoint and ends where an uninterrupted one does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from sparse_mu import pipeline
from tests.conftest import ROOT, TINY, compose_cfg

SETTINGS = [*TINY, "train.epochs=30", "pruner=dense", "forget=random", "forget.count=50"]


def test_killed_run_resumes_with_identical_metrics(tmp_path):
    clean = pipeline.run(compose_cfg(SETTINGS, tmp_path / "clean"), tmp_path / "clean" / "run")

    cache = tmp_path / "killed" / "cache"
    args = [sys.executable, "run.py", *SETTINGS, f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'killed' / 'run'}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((cache / "base").glob("*.partial/ckpt/last.ckpt")) if (cache / "base").is_dir() else []
        if found:
            ckpt = found[0]
            break
        time.sleep(0.05)
    assert ckpt is not None, "the base model never wrote a checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((cache / "base").glob("*/meta.json")), "killed too late: the base model finished"

    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming the interrupted build" in rerun.stdout
    resumed = json.loads((tmp_path / "killed" / "run" / "metrics.json").read_text())
    for key in ("UA", "RA", "TA", "MIA_efficacy"):
        assert resumed[key] == pytest.approx(clean[key], abs=1e-9), key
        assert resumed["original"][key] == pytest.approx(clean["original"][key], abs=1e-9), key
        assert resumed["retrain"][key] == pytest.approx(clean["retrain"][key], abs=1e-9), key
