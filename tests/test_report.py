"""Sweep reports: the paper's table layout, mean ± std over seeds only, plots, failed and
unreadable runs listed. Run folders are synthetic (metrics.json + config.yaml, as a run writes
them)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.container import BarContainer, ErrorbarContainer

from sparse_mu.report import collect, figure, report, summarise


def _set(tree: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        tree = tree.setdefault(key, {})
    tree[last] = value


def _run(
    root,
    name,
    unlearner="ft",
    pruner="omp",
    sparsity=95.0,
    seed=0,
    ua=10.0,
    forget="class",
    dataset="digits",
    config=None,
    choices=None,
    metrics=None,
):
    """One run folder: metrics.json, config.yaml (the resolved config), .hydra/hydra.yaml."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    m = {
        "dataset": dataset,
        "arch": "small_cnn",
        "forget": forget,
        "unlearner": unlearner,
        "pruner": pruner,
        "target_sparsity": sparsity,
        "seed": seed,
        "UA": ua,
        "RA": 99.0,
        "TA": 97.0,
        "MIA_efficacy": ua / 2,
        "RTE_s": 1.5,
        "sparsity": sparsity,
        "disparity_avg": 10.0 + seed,
        "device": "cpu",
        "precision": "32",
        "retrain": {"UA": 100.0, "RA": 99.5, "TA": 97.5, "MIA_efficacy": 100.0, "RTE_s": 9.0},
        "gap": {"UA": ua - 100.0, "RA": -0.5, "TA": -0.5, "MIA_efficacy": ua / 2 - 100.0},
        "original": {"UA": 0.0, "RA": 100.0, "TA": 98.0, "MIA_efficacy": 0.0},
        "hparams": {"lr": 0.01, "seed": seed},
    } | (metrics or {})
    cfg = {
        "dataset": {"name": dataset, "epochs": 40, "workers": 0},
        "train": {"epochs": 40},
        "pruner": {"_target_": pruner, "sparsity": sparsity / 100},
        "unlearner": {"_target_": unlearner, "lr": 0.01, "epochs": 10},
        "reference": {"epochs": 40},
        "forget": {"_target_": forget, "class_idx": 0, "seed": seed}
        if forget == "class"
        else {"_target_": forget, "fraction": 0.1, "seed": seed},
        "trainer": {"devices": 1, "enable_progress_bar": seed % 2 == 0},
        "logger": {"wandb": {"name": f"{unlearner}-s{seed}"}},
        "paths": {"output_dir": f"out/{name}", "cache_dir": f"cache{seed}"},
        "callbacks": {"progress": {"interactive": seed % 2 == 1}},
        "seed": seed,
        "checkpoint_every": seed + 1,
    }
    for key, value in (config or {}).items():
        _set(cfg, key, value)
    picked = {
        "dataset": dataset,
        "unlearner": unlearner,
        "debug": None,
        "tuning": "none",
        "hydra/launcher": "basic",
    } | (choices or {})
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": picked}}})
    )
    return d


@pytest.fixture
def sweep(tmp_path):
    cells = [("ft", "dense", 0.0), ("ft", "omp", 95.0), ("ga", "dense", 0.0), ("ga", "omp", 95.0)]
    for i, (unlearner, pruner, sparsity) in enumerate(cells):
        for seed in (0, 1):
            _run(
                tmp_path,
                f"{i}{seed}",
                unlearner,
                pruner,
                sparsity,
                seed,
                ua=10.0 * (i + 1) + seed,
                config={"unlearner.lr": 0.01 if unlearner == "ft" else 1e-4},
            )
    bad = tmp_path / "99"
    (bad / ".hydra").mkdir(parents=True)
    (bad / "FAILED").write_text(
        "Traceback (most recent call last):\n  ...\nRuntimeError: boom in job 99\n"
    )
    (bad / ".hydra" / "overrides.yaml").write_text("- unlearner=ga\n- forget.class_idx=3\n")
    return tmp_path


def test_report_tables_and_plot(sweep):
    done = report(sweep)
    assert (done["runs"], done["failed"], done["unreadable"]) == (8, 1, 0)
    md = (sweep / "report.md").read_text()
    assert "## digits / small_cnn, forget: class\n" in md  # nothing but the seed varies: no label
    assert "| method | UA dense | UA omp 95% |" in md
    ft = next(line for line in md.splitlines() if line.startswith("| ft |"))
    # UA of ft/dense over seeds 0, 1: 10 and 11 -> 10.50 ± 0.71, gap to Retrain -89.50
    assert "10.50 ± 0.71 (-89.50)" in ft
    assert "RuntimeError: boom in job 99" in md and "unlearner=ga forget.class_idx=3" in md
    csv = pd.read_csv(sweep / "report.csv")
    assert set(csv["method"]) == {"ft", "ga"} and (csv["seeds"] == 2).all()
    row = csv[(csv.method == "ga") & (csv.pruner == "omp")].iloc[0]
    assert row["UA_mean"] == pytest.approx(40.5) and row["disparity_avg_mean"] == pytest.approx(
        10.5
    )
    png, svg = sorted(sweep.glob("*.png")), sorted(sweep.glob("*.svg"))
    assert [p.name for p in png] == ["metrics_digits_small_cnn_class.png"] and png[
        0
    ].stat().st_size > 10_000
    assert [p.stem for p in svg] == [p.stem for p in png]


def test_seeds_pool_but_operational_settings_do_not_split(tmp_path):
    # seed, forget.seed (= seed), paths, logger, progress, checkpoint_every and workers differ
    for seed in (0, 1, 2):
        _run(tmp_path, str(seed), seed=seed, ua=float(seed), config={"dataset.workers": seed})
    csv = pd.read_csv(report(tmp_path)["files"][1])
    assert (
        len(csv) == 1 and csv["seeds"].item() == 3 and csv["UA_mean"].item() == pytest.approx(1.0)
    )
    assert not {"seed", "forget.seed", "paths.output_dir", "dataset.workers"} & set(csv.columns)


def test_forget_fractions_are_not_pooled(tmp_path):
    for i, fraction in enumerate((0.05, 0.3)):
        for seed in (0, 1):
            _run(
                tmp_path,
                f"{i}{seed}",
                forget="random",
                seed=seed,
                ua=80.0 + 10 * i + seed,
                config={"forget.fraction": fraction},
            )
    report(tmp_path)
    csv = pd.read_csv(tmp_path / "report.csv")
    assert sorted(csv["forget.fraction"]) == [0.05, 0.3] and (csv["seeds"] == 2).all()
    assert csv.set_index("forget.fraction")["UA_mean"].to_dict() == {0.05: 80.5, 0.3: 90.5}
    md = (tmp_path / "report.md").read_text()
    assert "## digits / small_cnn, forget: random (forget.fraction=0.05)" in md
    assert "## digits / small_cnn, forget: random (forget.fraction=0.3)" in md
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "metrics_digits_small_cnn_random_forget.fraction=0.05.png",
        "metrics_digits_small_cnn_random_forget.fraction=0.3.png",
    }


def test_data_files_are_not_pooled(tmp_path):
    for i, path in enumerate(("data/a.npz", "data/b.npz")):
        for seed in (0, 1):
            _run(
                tmp_path,
                f"{i}{seed}",
                dataset="npz",
                seed=seed,
                ua=float(i),
                config={"dataset.path": path},
            )
    csv = pd.read_csv(report(tmp_path)["files"][1])
    assert sorted(csv["dataset.path"]) == ["data/a.npz", "data/b.npz"] and (csv["seeds"] == 2).all()
    assert "forget: class (dataset.path=data/b.npz)" in (tmp_path / "report.md").read_text()


def test_debug_runs_are_not_pooled_with_real_ones(tmp_path):
    for seed in (0, 1):
        _run(tmp_path, f"real{seed}", seed=seed, ua=50.0)
        _run(
            tmp_path,
            f"fast{seed}",
            seed=seed,
            ua=0.0,
            choices={"debug": "fast"},
            config={"train.epochs": 2, "reference.epochs": 1, "unlearner.epochs": 1},
        )
    csv = pd.read_csv(report(tmp_path)["files"][1], keep_default_na=False)
    assert csv.set_index("debug")["UA_mean"].to_dict() == {"fast": 0.0, "null": 50.0}
    md = (tmp_path / "report.md").read_text()
    # the debug choice names the rows; the values it sets are not repeated in the labels
    assert "forget: class (debug=fast)" in md and "forget: class (debug=null)" in md
    assert "epochs=" not in md


def test_a_choice_that_changes_no_value_does_not_split(tmp_path):
    for seed in (0, 1):
        _run(tmp_path, f"a{seed}", seed=seed, choices={"experiment": "a"})
        _run(tmp_path, f"b{seed}", seed=seed + 2, choices={"experiment": "b"})
    csv = pd.read_csv(report(tmp_path)["files"][1])
    assert csv["seeds"].tolist() == [4] and "experiment" not in csv


def test_runs_on_other_devices_are_not_pooled(tmp_path):
    for seed, device in enumerate(("cpu", "cuda (H200)")):
        _run(tmp_path, str(seed), seed=seed, metrics={"device": device})
    csv = pd.read_csv(report(tmp_path)["files"][1])
    assert sorted(csv["device"]) == ["cpu", "cuda (H200)"] and (csv["seeds"] == 1).all()


def test_hyperparameters_that_vary_split_a_method(tmp_path):
    for i, schedule in enumerate(["constant", "linear_decay"]):
        for seed in (0, 1):
            _run(
                tmp_path,
                f"{i}{seed}",
                "l1_sparse",
                "dense",
                0.0,
                seed,
                ua=5.0 + i,
                config={"unlearner.schedule": schedule},
            )
    report(tmp_path)
    csv = pd.read_csv(tmp_path / "report.csv")
    assert sorted(csv["method"]) == [
        "l1_sparse (schedule=constant)",
        "l1_sparse (schedule=linear_decay)",
    ]
    assert (csv["seeds"] == 2).all()
    assert "| l1_sparse (schedule=linear_decay) |" in (tmp_path / "report.md").read_text()


def test_a_job_run_twice_counts_once(tmp_path):
    for sweep in ("a", "b"):  # the same two jobs (seeds 0, 1) in two sweeps
        for seed in (0, 1):
            _run(tmp_path / sweep, str(seed), seed=seed, ua=10.0 * seed)
    csv = pd.read_csv(report(tmp_path)["files"][1])
    assert csv[["seeds", "repeats"]].values.tolist() == [[2, 2]]
    assert csv["UA_std"].item() == pytest.approx(np.std([0.0, 10.0], ddof=1), abs=1e-4)
    assert "2 runs repeat an experiment and seed" in (tmp_path / "report.md").read_text()


def test_pruner_settings_that_vary_split_a_variant(tmp_path):
    for layerwise in (False, True):
        for seed in (0, 1):
            _run(tmp_path, f"{layerwise}{seed}", seed=seed, config={"pruner.layerwise": layerwise})
    csv = pd.read_csv(report(tmp_path)["files"][1])
    assert sorted(csv["variant"]) == ["omp 95% (layerwise=false)", "omp 95% (layerwise=true)"]
    assert (csv["seeds"] == 2).all()


def test_unreadable_runs_are_listed_and_skipped(sweep):
    (sweep / "00" / "metrics.json").write_text('{"UA": 10.0, "RA"')  # truncated
    (sweep / "01" / "config.yaml").write_text("a: [b\n")  # garbage
    (sweep / "10" / "metrics.json").write_bytes(b"\xff\xfe\x00garbage")
    (sweep / "11" / "metrics.json").write_text('{"UA": 10.0}')  # valid JSON, not a run's record
    (sweep / "20" / "config.yaml").unlink()
    runs, failed, unreadable = collect(sweep)
    assert len(runs) == 3 and [f["run_dir"] for f in failed] == ["99"]
    problems = {u["run_dir"]: u["error"] for u in unreadable}
    assert (
        problems.keys() == {"00", "01", "10", "11", "20"}
        and problems["20"] == "config.yaml missing"
    )
    assert problems["00"].startswith("metrics.json: JSONDecodeError")
    assert problems["01"].startswith("config.yaml:") and "no dataset" in problems["11"]
    done = report(sweep)
    assert (done["runs"], done["failed"], done["unreadable"]) == (3, 1, 5)
    md = (sweep / "report.md").read_text()
    assert "## Unreadable runs (5)" in md and "| 01 | config.yaml:" in md
    assert {
        u["run_dir"] for u in json.loads((sweep / "report.json").read_text())["unreadable"]
    } == problems.keys()


def test_report_with_only_failures(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "FAILED").write_text("ValueError: nope\n")
    done = report(tmp_path)
    assert done == {"runs": 0, "failed": 1, "unreadable": 0, "files": [tmp_path / "report.md"]}
    assert "ValueError: nope" in (tmp_path / "report.md").read_text()


def test_damage_flags_are_counted(tmp_path):
    for seed in (0, 1, 2):
        _run(tmp_path, str(seed), seed=seed, metrics={"damaged": seed == 1})
    report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "damaged omp 95%" in md and "| 1/3 |" in md


def test_flops_of_each_variant_are_noted_under_the_table(tmp_path):
    _run(tmp_path, "0", pruner="dense", sparsity=0.0, metrics={"flops_percent": 100.0})
    _run(tmp_path, "1", pruner="filter_l1", sparsity=50.0, metrics={"flops_percent": 25.8})
    report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "FLOPs per image, % of the dense model (dead channels removed): dense 100.0, filter_l1 50% 25.8." in md


# -- plots ---------------------------------------------------------------------------------


def _errorbar_ranges(ax) -> np.ndarray:
    segments = [
        seg
        for c in ax.containers
        if isinstance(c, ErrorbarContainer)
        for seg in c.lines[2][0].get_segments()
    ]
    return np.array([seg[:, 1] for seg in segments])


def test_categorical_comparisons_are_bars_with_retrain_as_reference(tmp_path):
    # Table 3 shaped: methods x dense / omp 95 %, Retrain in the sweep; UA of ft near 100 with a
    # large std (its error bar would pass 100) and of ga near 0 (below 0)
    for seed in (0, 1):
        for unlearner, ua in (("retrain", 100.0), ("ft", 99.0 - 8 * seed), ("ga", 1.0 + 8 * seed)):
            for pruner, sparsity in (("dense", 0.0), ("omp", 95.0)):
                _run(
                    tmp_path, f"{unlearner}{pruner}{seed}", unlearner, pruner, sparsity, seed, ua=ua
                )
    summary = summarise(collect(tmp_path)[0])
    fig = figure(summary)
    axes = fig.axes
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["ft", "ga", "Retrain (reference)"]  # Retrain is the reference, not a bar
    ua = axes[0]
    bars = [c for c in ua.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and all(len(b) == 2 for b in bars)  # a bar per method and variant
    ranges = _errorbar_ranges(ua)
    assert ranges.min() == pytest.approx(0.0) and ranges.max() == pytest.approx(100.0)
    assert [t.get_text() for t in ua.get_xticklabels()] == ["dense", "omp 95%"]


def test_lines_against_sparsity_keep_coinciding_series_visible(tmp_path):
    # Fig. 3 shaped: FT and GA over four sparsities with identical values
    for seed in (0, 1):
        for unlearner in ("ft", "ga"):
            for sparsity in (0.0, 50.0, 90.0, 95.0):
                _run(
                    tmp_path,
                    f"{unlearner}{sparsity:g}_{seed}",
                    unlearner,
                    "omp",
                    sparsity,
                    seed,
                    ua=50.0,
                )
    fig = figure(summarise(collect(tmp_path)[0]))
    ua = fig.axes[0]
    assert not [c for c in ua.containers if isinstance(c, BarContainer)]
    ft, ga = (c.lines[0] for c in ua.containers if isinstance(c, ErrorbarContainer))
    assert np.array_equal(ft.get_ydata(), ga.get_ydata())
    assert (ft.get_xdata() != ga.get_xdata()).all()  # offset sideways
    assert ft.get_marker() != ga.get_marker() and ft.get_linestyle() != ga.get_linestyle()
    reference = next(line for line in ua.get_lines() if line.get_label() == "Retrain (reference)")
    assert reference.get_color() == "black" and reference.get_linestyle() == "--"
    assert len(fig.legends) == 1 and ua.get_legend() is None


def test_unlearning_seeds_pool_and_the_spread_is_over_training_seeds(tmp_path):
    """Two training seeds x two unlearning seeds: one row, std over the training seeds' means,
    the within-seed spread apart; the per-example table names its reference."""
    pe = {"per_example": {"reference": "retrain_then_prune", "references": 8, "unlearn_seeds": 8,
                          "forget_ulira_auc": 80.0, "forget_F": 0.2},
          "per_example_original": {"forget_ulira_auc": 60.0, "forget_F": 0.25},
          "reference_kind": "retrain_then_prune"}
    for seed in (0, 1):
        for u in (100, 101):
            ua = 10.0 * seed + (u - 100)  # training seed moves UA by 10, unlearning seed by 1
            _run(tmp_path, f"{seed}_{u}", seed=seed, ua=ua, config={"unlearn_seed": u},
                 metrics={**pe, "unlearn_seed": u})
    files = report(tmp_path)["files"]
    csv = pd.read_csv(files[1])
    assert len(csv) == 1 and csv["seeds"].item() == 4 and csv["train_seeds"].item() == 2
    assert csv["UA_mean"].item() == pytest.approx(5.5)
    assert csv["UA_std"].item() == pytest.approx(np.std([0.5, 10.5], ddof=1), abs=1e-3)
    assert csv["UA_std_unlearn"].item() == pytest.approx(np.std([0, 1], ddof=1), abs=1e-3)
    md = files[0].read_text()
    assert "reference: retrain_then_prune; 8 references, 8 unlearned models" in md
    assert "| original (nothing unlearned) | 60 |" in md
    assert any(f.name.startswith("per_example_") for f in files)


def test_sequential_rounds_get_a_table_a_csv_and_a_plot(tmp_path):
    """forget=sequential runs: the rounds pool over seeds per method and variant; each round's
    gap is to that round's Retrain."""
    for unlearner in ("ft", "ga"):
        for seed in (0, 1):
            rounds = [{"round": r, "forget_size": 10 * r, "request_size": 10, "UA": 10.0 * r + seed, "RA": 99.0,
                       "TA": 97.0, "MIA_efficacy": 5.0 * r, "disparity_avg": 20.0 - r, "RTE_s": 0.5,
                       "retrain": {"UA": 12.0 * r, "RA": 99.5, "TA": 97.5, "MIA_efficacy": 50.0, "RTE_s": 3.0}}
                      for r in (1, 2, 3)]
            _run(tmp_path, f"{unlearner}{seed}", unlearner, seed=seed, forget="sequential",
                 metrics={"sequential": {"rounds": rounds}})
    _run(tmp_path, "plain", "ft", forget="class")  # no rounds: not in the rounds' report
    done = report(tmp_path)
    csv = pd.read_csv(tmp_path / "rounds.csv")
    assert len(csv) == 6 and (csv["seeds"] == 2).all() and set(csv["forget"]) == {"sequential"}
    ft2 = csv[(csv.method == "ft") & (csv["round"] == 2)].iloc[0]
    assert ft2["UA_mean"] == pytest.approx(20.5) and ft2["forget_size_mean"] == 20
    md = (tmp_path / "report.md").read_text()
    assert "# Sequential deletion requests" in md
    assert "| ft | omp 95% | 2 | 20 | 20.50 ± 0.71 (-3.50) |" in md
    pngs = [p for p in done["files"] if p.name.startswith("rounds_") and p.suffix == ".png"]
    assert [p.name for p in pngs] == ["rounds_digits_small_cnn_sequential.png"] and pngs[0].stat().st_size > 10_000
