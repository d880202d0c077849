"""Cost accounting against Retrain, budgets relative to Retrain, the damage flag, and the Retrain
reference's cache split (model without `eval.*`, metrics with it)."""

from __future__ import annotations

import json

import pytest

from sparse_mu import cost, pipeline
from sparse_mu.errors import ConfigError

# digits: |D_r| = 1167 retain samples for class 0 -> 19 batches of 64 per epoch; D_f: 128 -> 2
RETAIN_BATCHES, FORGET_BATCHES = 19, 2


def test_budget_schedule_spends_at_most_the_budget():
    assert cost.budget_schedule(0.1, 3800, 19) == (20, None)  # 380 steps: 20 whole epochs
    assert cost.budget_schedule(0.1, 1000, 19) == (5, None)   # 100 steps: 5 epochs (95), not 6 (114)
    assert cost.budget_schedule(0.1, 114, 19) == (1, 11)      # under one epoch: one epoch cut at 11 steps
    assert cost.budget_schedule(0.001, 114, 19) == (1, 1)     # at least one step
    with pytest.raises(ConfigError, match="unlearner.budget"):
        cost.budget_schedule(0.0, 114, 19)


def test_cost_fields_are_ratios_to_retrain():
    ref = {"steps": 200, "RTE_s": 4.0, "batch_size": 64}
    out = cost.cost_fields(20, 0.5, None, ref)
    assert out == {"steps": 20, "grad_samples": None, "retrain_steps": 200, "cost_vs_retrain_steps": 0.1,
                   "cost_vs_retrain_s": 0.125}
    one_shot = cost.cost_fields(0, 1.0, 1280, ref)  # gradients of 1280 samples vs 200 x 64
    assert one_shot["cost_vs_retrain_steps"] == 0.1
    assert cost.cost_fields(20, 0.5, None, None)["cost_vs_retrain_steps"] is None


def test_damage_reasons():
    assert cost.damage(99.0, 100.0, {}, {}, ra_drop=2.0, loss_ratio=10.0) == []
    assert "points below Retrain" in cost.damage(97.0, 100.0, {}, {}, 2.0, 10.0)[0]
    jump = cost.damage(100.0, 100.0, {"unlearn/retain_loss": 0.01}, {"unlearn/retain_loss": 0.9}, 2.0, 10.0)
    assert len(jump) == 1 and "retain_loss rose" in jump[0]
    # a tiny start is measured from the floor: 0.001 -> 0.05 is no jump
    assert cost.damage(100.0, 100.0, {"unlearn/retain_loss": 0.001}, {"unlearn/retain_loss": 0.05}, 2.0, 10.0) == []
    # only retain losses count: gradient ascent raises its forget loss by design
    assert cost.damage(100.0, 100.0, {"unlearn/forget_loss": 0.01}, {"unlearn/forget_loss": 9.0}, 2.0, 10.0) == []


def test_steps_are_counted_by_lightning(tiny_cfg, tmp_path):
    m = pipeline.run(tiny_cfg("pruner=dense"), tmp_path / "run")  # FT 2 epochs, Retrain 6 (TINY)
    assert m["steps"] == 2 * RETAIN_BATCHES
    assert m["retrain_steps"] == m["retrain"]["steps"] == 6 * RETAIN_BATCHES
    assert m["cost_vs_retrain_steps"] == pytest.approx(2 / 6, abs=1e-4)
    assert m["cost_vs_retrain_s"] == pytest.approx(m["RTE_s"] / m["retrain"]["RTE_s"], rel=1e-3)
    assert m["grad_samples"] is None
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["cost_vs_retrain_steps"] == m["cost_vs_retrain_steps"] and saved["damaged"] is False


def test_budget_derives_epochs_and_steps(tiny_cfg, tmp_path):
    # Retrain: 6 x 19 = 114 steps. 0.35 -> 39 steps: 2 whole epochs (38)
    m = pipeline.run(tiny_cfg("pruner=dense", "unlearner.budget=0.35"), tmp_path / "a")
    assert m["hparams"]["epochs"] == 2 and m["steps"] == 38
    # 0.1 -> 11 steps, less than an epoch: one epoch stopped after 11 steps
    m = pipeline.run(tiny_cfg("pruner=dense", "unlearner.budget=0.1"), tmp_path / "b")
    assert m["hparams"]["epochs"] == 1 and m["hparams"]["max_steps"] == 11 and m["steps"] == 11
    assert m["cost_vs_retrain_steps"] == pytest.approx(11 / 114, abs=1e-4)
    # GA counts its own steps on D_f (2 batches per epoch): 11 steps -> 5 epochs, 10 steps
    m = pipeline.run(tiny_cfg("pruner=dense", "unlearner=ga", "unlearner.budget=0.1"), tmp_path / "c")
    assert m["hparams"]["epochs"] == 5 and m["steps"] == 5 * FORGET_BATCHES


def test_one_shot_cost_is_its_sample_gradients(tiny_cfg, tmp_path):
    m = pipeline.run(tiny_cfg("pruner=dense", "unlearner=ff", "unlearner.epochs=1"), tmp_path / "ff")
    assert m["steps"] == 0 and m["grad_samples"] == 1295 - m["forget_size"]  # one per retain sample
    assert m["cost_vs_retrain_steps"] == pytest.approx(1167 / (6 * RETAIN_BATCHES * 64), abs=1e-4)


def test_damage_flag_fires_on_a_wrecked_model_only(tiny_cfg, tmp_path):
    healthy = pipeline.run(tiny_cfg("pruner=dense"), tmp_path / "ok")
    assert healthy["damaged"] is False and healthy["damage"] == []
    assert healthy["RA"] > healthy["retrain"]["RA"] - 2
    # gradient ascent at a large rate for many steps wrecks the model: RA collapses
    wrecked = pipeline.run(tiny_cfg("pruner=dense", "unlearner=ga", "unlearner.lr=0.01", "unlearner.epochs=10"),
                           tmp_path / "bad")
    assert wrecked["RA"] < wrecked["retrain"]["RA"] - 2
    assert wrecked["damaged"] is True and "points below Retrain" in wrecked["damage"][0]


def test_fine_tuning_at_a_huge_rate_flags_the_retain_loss(tiny_cfg, tmp_path):
    m = pipeline.run(tiny_cfg("pruner=dense", "unlearner.lr=0.8"), tmp_path / "jump")
    assert m["damaged"] is True
    assert any("retain_loss rose" in r for r in m["damage"])


def test_eval_settings_reuse_the_reference_model(tiny_cfg, tmp_path, monkeypatch, caplog):
    first = pipeline.run(tiny_cfg("pruner=dense"), tmp_path / "a")
    trained = []
    fit = pipeline.Job.fit
    monkeypatch.setattr(pipeline.Job, "fit", lambda self, module, stage, *a: trained.append(stage) or fit(self, module, stage, *a))
    with caplog.at_level("INFO", logger="sparse_mu"):
        second = pipeline.run(tiny_cfg("pruner=dense", "eval.mia_privacy=true"), tmp_path / "b")
    assert trained == ["unlearn"]  # the Retrain reference's model came from the cache
    assert "reference_model: reusing cached artifact" in caplog.text
    assert "reference: built and cached" in caplog.text  # its metrics were recomputed with MIA-Privacy
    assert second["artifacts"]["reference"] == first["artifacts"]["reference"]
    assert second["retrain"]["RA"] == first["retrain"]["RA"] and second["retrain_steps"] == first["retrain_steps"]


def test_report_carries_cost_and_damage(tmp_path):
    from sparse_mu import report
    from tests.test_report import _run

    base = {"steps": 38, "RTE_s": 1.0, "grad_samples": None, "retrain_steps": 380,
            "cost_vs_retrain_steps": 0.1, "cost_vs_retrain_s": 0.1}
    for seed, damaged in ((0, True), (1, False)):
        reasons = ["RA 90.00 is 10.00 points below Retrain's 100.00"] if damaged else []
        _run(tmp_path, f"s{seed}", seed=seed, metrics={**base, "damaged": damaged, "damage": reasons})
    summary = report.summarise(report.collect(tmp_path)[0])
    assert summary["damaged"].iloc[0] == 1 and summary["cost_vs_retrain_steps_mean"].iloc[0] == 0.1
    notes = cost.table_notes({**base, "retrain": {"RTE_s": 10.0}, "damaged": True, "damage": ["RA low"]})
    assert notes == ["cost vs Retrain: 38 steps / 380 steps (0.100), 1.00 / 10.00 s (0.100)", "DAMAGED: RA low"]
