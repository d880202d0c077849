"""End to end on digits: outputs, the Retrain reference, the cache, and what Retrain sees."""

from __future__ import annotations

import json

import pytest
import torch

from sparse_mu import pipeline
from sparse_mu.unlearn import FineTune, Retrain

KEYS = {"UA", "RA", "TA", "MIA_efficacy", "RTE_s", "sparsity", "disparity_avg", "config_hash", "device",
        "retrain", "gap"}


def test_end_to_end_outputs(tiny_cfg, tmp_path, caplog):
    cfg = tiny_cfg("pruner.sparsity=0.9")
    out = tmp_path / "run"
    m = pipeline.run(cfg, out)
    assert set(m) >= KEYS
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["UA"] == m["UA"] and saved["config_hash"] == m["config_hash"]
    for k in ("UA", "RA", "TA", "MIA_efficacy"):
        assert 0 <= m[k] <= 100
        assert m["gap"][k] == pytest.approx(m[k] - m["retrain"][k])
    assert m["disparity_avg"] == pytest.approx(sum(abs(m["gap"][k]) for k in m["gap"]) / 4)
    # the sparsity is counted from the final weights: the mask held through unlearning
    assert m["sparsity"] == pytest.approx(90.0, abs=0.01)
    # unstructured zeros remove no whole channel: the FLOPs are the dense model's (small_cnn, 8x8)
    assert m["flops"] == m["flops_dense"] == 2 * (32 * 9 * 64 + 64 * 32 * 9 * 64 + 128 * 64 * 9 * 16 + 128 * 10)
    assert m["flops_percent"] == 100.0
    assert m["retrain"]["UA"] > 90  # Retrain never saw class 0: it cannot classify it
    assert m["original"]["RA"] > 90  # the base model fits D
    forget = json.loads((out / "forget_indices.json").read_text())
    assert forget["class_idx"] == 0 and len(forget["forget"]) == m["forget_size"]
    assert (out / "config.yaml").is_file() and (out / "csv" / "metrics.csv").is_file()


def test_second_run_reuses_cached_stages(tiny_cfg, tmp_path, caplog, monkeypatch):
    cfg = tiny_cfg()
    first = pipeline.run(cfg, tmp_path / "a")
    trained = []
    monkeypatch.setattr(pipeline.Job, "fit", lambda self, module, stage, *a: trained.append(stage) or 0.0)
    with caplog.at_level("INFO", logger="sparse_mu"):
        second = pipeline.run(cfg, tmp_path / "b")
    assert trained == ["unlearn"]  # base, pruned model and Retrain reference all came from the cache
    for stage in ("base", "prune", "reference"):
        assert f"{stage}: reusing cached artifact" in caplog.text
    assert second["retrain"] == first["retrain"]
    assert second["original"] == first["original"]


def test_changing_a_setting_changes_the_artifact(tiny_cfg, tmp_path):
    a = pipeline.run(tiny_cfg(), tmp_path / "a")
    b = pipeline.run(tiny_cfg("pruner.sparsity=0.5"), tmp_path / "b")
    assert a["artifacts"]["base"] == b["artifacts"]["base"]
    assert a["artifacts"]["pruned"] != b["artifacts"]["pruned"]
    assert a["artifacts"]["reference"] != b["artifacts"]["reference"]


def test_retrain_never_sees_a_forget_sample(tiny_cfg, tmp_path, monkeypatch):
    seen = {}
    for cls in (Retrain, FineTune):
        original = cls.training_step

        def spy(self, batch, batch_idx, _orig=original):
            seen.setdefault(type(self).__name__, []).append(batch[2].clone())
            return _orig(self, batch, batch_idx)

        monkeypatch.setattr(cls, "training_step", spy)
    m = pipeline.run(tiny_cfg("forget=random", "forget.fraction=0.2", "pruner=dense"), tmp_path / "r")
    forget = torch.tensor(json.loads((tmp_path / "r" / "forget_indices.json").read_text())["forget"])
    for name in ("Retrain", "FineTune"):
        idx = torch.cat(seen[name])
        assert not torch.isin(idx, forget).any(), name
    assert len(torch.cat(seen["Retrain"]).unique()) == pytest.approx(m["forget_size"] * 4, rel=0.05)  # all of D_r (80 %)


def test_an_application_is_a_unit_the_driver_calls(tiny_cfg, tmp_path, monkeypatch):
    """A registered application is checked in setup, joins the run's identity and adds its
    metrics and artifacts, without the pipeline naming it (sparse_mu.extensions)."""
    from sparse_mu import extensions
    calls = []

    class Probe(extensions.Application):
        name = "probe_app"

        def enabled(self, cfg):
            return True

        def setup(self, job):
            calls.append("setup")

        def identity(self, cfg):
            return {"probe_app": 1}

        def metrics(self, done):
            calls.append("metrics")
            assert done.reference is not None and done.net is not None
            return {"probe_metric": 7, "artifacts": {"probe": "key"}}

    plain = pipeline.run(tiny_cfg(), tmp_path / "a")
    monkeypatch.setitem(extensions.REGISTRY, "probe_app", Probe())
    m = pipeline.run(tiny_cfg(), tmp_path / "b")
    assert calls == ["setup", "metrics"]
    assert m["probe_metric"] == 7 and m["artifacts"]["probe"] == "key"
    assert m["artifacts"]["base"] == plain["artifacts"]["base"]
    assert m["config_hash"] != plain["config_hash"]
