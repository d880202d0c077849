"""Sweep reports: the paper's table layout, mean ± std over seeds, plots, failed runs listed."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sparse_mu.report import collect, report


def _run(root, name, unlearner, pruner, sparsity, seed, ua, hparams=None):
    d = root / name
    d.mkdir(parents=True)
    m = {"dataset": "digits", "arch": "small_cnn", "forget": "class", "unlearner": unlearner, "pruner": pruner,
         "target_sparsity": sparsity, "seed": seed, "UA": ua, "RA": 99.0, "TA": 97.0, "MIA_efficacy": ua / 2,
         "RTE_s": 1.5, "sparsity": sparsity, "disparity_avg": 10.0 + seed, "device": "cpu",
         "retrain": {"UA": 100.0, "RA": 99.5, "TA": 97.5, "MIA_efficacy": 100.0, "RTE_s": 9.0},
         "gap": {"UA": ua - 100.0, "RA": -0.5, "TA": -0.5, "MIA_efficacy": ua / 2 - 100.0},
         "original": {"UA": 0.0, "RA": 100.0, "TA": 98.0, "MIA_efficacy": 0.0},
         "hparams": hparams or {"lr": 0.01, "seed": seed}}
    (d / "metrics.json").write_text(json.dumps(m))


@pytest.fixture
def sweep(tmp_path):
    for i, (unlearner, pruner, sparsity) in enumerate([("ft", "dense", 0.0), ("ft", "omp", 95.0), ("ga", "dense", 0.0), ("ga", "omp", 95.0)]):
        for seed in (0, 1):
            _run(tmp_path, f"{i}{seed}", unlearner, pruner, sparsity, seed, ua=10.0 * (i + 1) + seed)
    bad = tmp_path / "99"
    (bad / ".hydra").mkdir(parents=True)
    (bad / "FAILED").write_text("Traceback (most recent call last):\n  ...\nRuntimeError: boom in job 99\n")
    (bad / ".hydra" / "overrides.yaml").write_text("- unlearner=ga\n- forget.class_idx=3\n")
    return tmp_path


def test_report_tables_and_plot(sweep):
    done = report(sweep)
    assert done["runs"] == 8 and done["failed"] == 1
    md = (sweep / "report.md").read_text()
    assert "| method | UA dense | UA omp 95% |" in md
    ft = next(line for line in md.splitlines() if line.startswith("| ft |"))
    # UA of ft/dense over seeds 0, 1: 10 and 11 -> 10.50 ± 0.71, gap to Retrain -89.50
    assert "10.50 ± 0.71 (-89.50)" in ft
    assert "RuntimeError: boom in job 99" in md and "unlearner=ga forget.class_idx=3" in md
    csv = pd.read_csv(sweep / "report.csv")
    assert set(csv["method"]) == {"ft", "ga"} and (csv["seeds"] == 2).all()
    row = csv[(csv.method == "ga") & (csv.pruner == "omp")].iloc[0]
    assert row["UA_mean"] == pytest.approx(40.5) and row["disparity_avg_mean"] == pytest.approx(10.5)
    png = list(sweep.glob("*.png"))
    assert len(png) == 1 and png[0].stat().st_size > 10_000


def test_collect_skips_nothing(sweep):
    runs, failed = collect(sweep)
    assert len(runs) == 8 and [f["run_dir"] for f in failed] == ["99"]


def test_report_with_only_failures(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "FAILED").write_text("ValueError: nope\n")
    done = report(tmp_path)
    assert done == {"runs": 0, "failed": 1, "files": [tmp_path / "report.md"]}
    assert "ValueError: nope" in (tmp_path / "report.md").read_text()


def test_hyperparameters_that_vary_split_a_method(tmp_path):
    for i, schedule in enumerate(["constant", "linear_decay"]):
        for seed in (0, 1):
            _run(tmp_path, f"{i}{seed}", "l1_sparse", "dense", 0.0, seed, ua=5.0 + i,
                 hparams={"gamma": 5e-4, "schedule": schedule, "seed": seed})
    report(tmp_path)
    csv = pd.read_csv(tmp_path / "report.csv")
    assert sorted(csv["method"]) == ["l1_sparse (schedule=constant)", "l1_sparse (schedule=linear_decay)"]
    assert "| l1_sparse (schedule=linear_decay) |" in (tmp_path / "report.md").read_text()
