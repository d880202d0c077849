"""Bad input: one clear message naming the setting, exit code 1, no results written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

CASES = {
    "unknown option": (["pruner=magic"], "pruner"),
    "sparsity 1.0": (["pruner.sparsity=1.0"], "pruner.sparsity must be a fraction in [0, 1)"),
    "imp rate": (["pruner=imp", "pruner.rate=1.2"], "pruner.rate must be in (0, 1); got 1.2"),
    "arch for the data": (["arch=swin_t"], "arch swin_t (patch_size=2) needs images of at least 16x16 pixels"),
    "class index": (["forget.class_idx=10"], "forget.class_idx must be an integer in [0, 9]"),
    "forget fraction": (["forget=random", "forget.fraction=1.5"], "forget.fraction must be in (0, 1)"),
    "missing npz": (["dataset=npz", "dataset.path=nowhere.npz"], "dataset.path must name an existing .npz file"),
    "malformed npz": (["dataset=npz", "dataset.path={bad}"], "lacks ['x_train', 'y_train']"),
    "backdoor trigger": (["forget=backdoor", "forget.trigger_size=9"], "forget.trigger_size must be at most 6"),
    "type of a setting": (["seed=abc"], "seed must be an integer in [0, 4294967295]; got 'abc'"),
    "unknown key": (["+unlearner.nosuch=1"], "unlearner.nosuch is not a setting of unlearner"),
    "gpu_per_job type": (["gpu_per_job=2"], "gpu_per_job must be true or false; got 2"),
    "transfer target": (["transfer=linear_probe", "dataset@transfer.dataset=npz", "transfer.dataset.path=nowhere.npz"],
                        "transfer.dataset.path must name an existing .npz file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(case, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, pixels=np.zeros((3, 4, 4)))
    args, message = CASES[case]
    args = [a.format(bad=bad) for a in args]
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "run.py", *args, "logger=csv", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in text, text
    assert "Traceback" not in text, text
    assert not (out_dir / "metrics.json").exists()
    assert not (tmp_path / "cache").exists()  # nothing was trained or cached
