"""W&B: readable run names unique within a sweep, tags for every choice, one copy of each final
metric, the config once and nested, a loss curve per stage, no deprecation warning."""

from __future__ import annotations

from unittest import mock

import pytest
import wandb

from sparse_mu import pipeline
from sparse_mu.loggers import WandbLogger, run_name, run_tags
from tests.conftest import compose_cfg

NAMES = {"unlearner": "ft", "pruner": "omp", "forget": "class", "dataset": "digits"}


def _name(overrides: list[str], names: dict = NAMES) -> str:
    return run_name(compose_cfg(overrides), names, overrides)


@pytest.mark.parametrize("fixed, sweep", [
    ([], ["pruner.sparsity=0.5", "pruner.sparsity=0.9"]),           # issue 15: both were ft-omp-class-s0
    ([], ["unlearner.lr=0.01", "unlearner.lr=0.1"]),
    ([], ["forget.class_idx=1", "forget.class_idx=[3,5]"]),
    (["forget=random"], ["forget.fraction=0.05", "forget.fraction=0.3"]),
    (["forget=random"], ["forget.count=10", "forget.count=20"]),
    (["dataset=npz"], ["dataset.path=a.npz", "dataset.path=b.npz"]),
])
def test_run_names_differ_when_the_sweep_varies_anything(fixed, sweep):
    names = {**NAMES, "forget": "random"} if fixed == ["forget=random"] else NAMES
    runs = [_name([*fixed, o], names) for o in sweep]
    assert len(set(runs)) == len(runs), runs


def test_run_name_is_readable_and_leaves_out_operational_overrides():
    assert _name([]) == "ft-omp95-class0-s0"
    assert _name(["seed=2", "pruner.sparsity=0.5", "paths.cache_dir=/tmp/c", "logger=csv",
                  "+experiment=table3_tiny", "unlearner.lr=0.01"]) == "ft-omp50-class0-s2 unlearner.lr=0.01"
    random = run_name(compose_cfg(["forget=random"]), {**NAMES, "forget": "random"}, ["forget=random"])
    assert random == "ft-omp95-random10%-s0"
    dense = run_name(compose_cfg(["pruner=dense"]), {**NAMES, "pruner": "dense"}, ["pruner=dense"])
    assert dense == "ft-dense-class0-s0"


def test_tags_carry_every_chosen_option():
    chosen = {**NAMES, "tuning": "paper", "debug": "fast", "experiment": "table3_tiny", "transfer": None,
              "logger": "default", "hydra/launcher": "basic", "unlearner@reference": "retrain",
              "tuned": "paper/digits_ft"}
    tags = run_tags(compose_cfg(["pruner.sparsity=0.5"]), chosen)
    assert set(tags) == {"unlearner=ft", "pruner=omp", "forget=class", "dataset=digits", "tuning=paper",
                         "debug=fast", "experiment=table3_tiny", "sparsity=50", "seed=0"}


def test_no_anonymous_deprecation_warning(tmp_path, monkeypatch):
    """A real offline wandb.init from the configured logger warns about nothing."""
    warnings = []
    monkeypatch.setattr(wandb, "termwarn", lambda msg, *a, **k: warnings.append(msg))
    logger = WandbLogger(project="test", offline=True, save_dir=str(tmp_path), name="x")
    assert "anonymous" not in logger._wandb_init
    logger.experiment.log({"a": 1.0})
    wandb.finish()
    assert not [w for w in warnings if "anonymous" in w], warnings


def test_a_run_logs_config_once_final_metrics_once_and_a_curve_per_stage(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # disabled W&B is not built at all (test_loggers_disabled.py)
    run = mock.MagicMock()
    init = mock.MagicMock(return_value=run)
    with mock.patch.object(wandb, "init", init), mock.patch.object(wandb, "finish"):
        cfg = tiny_cfg("logger=default", "pruner.sparsity=0.9")
        metrics = pipeline.run(cfg, tmp_path / "run")

    init.assert_called_once()
    kwargs = init.call_args.kwargs
    assert "anonymous" not in kwargs
    assert kwargs["config"]["unlearner"]["lr"] == cfg.unlearner.lr  # nested, the whole config
    assert "-omp90-" in kwargs["name"] and "sparsity=90" in kwargs["tags"]
    run.config.update.assert_not_called()  # no top-level `lr`, `epochs` from save_hyperparameters

    logged = [c.args[0] for c in run.log.call_args_list]
    keys = {k for d in logged for k in d}
    assert not [k for k in keys if k.startswith("final/")]
    run.summary.update.assert_called_once()
    summary = run.summary.update.call_args.args[0]
    assert summary["UA"] == metrics["UA"] and summary["gap/RA"] == metrics["gap"]["RA"]
    assert not [k for k in summary if k.startswith("final/")]

    # every stage's losses under its own prefix, on its own epoch axis 1..E
    base_epochs = [d["base/epoch"] for d in logged if "base/train/loss" in d]
    assert base_epochs == list(range(1, cfg.train.epochs + 1))
    assert any("prune1/train/loss" in d for d in logged)
    assert [d["reference/epoch"] for d in logged if "reference/retain_loss" in d] == list(
        range(1, cfg.reference.epochs + 1))
    assert any("unlearn/retain_loss" in d for d in logged)  # the unlearning loop, live
    run.define_metric.assert_any_call("base/train/loss", step_metric="base/epoch")
