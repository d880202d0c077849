"""The reference store, the seeds as separate axes, retrain_then_prune and the per-example
application (docs/evaluation.md): keys, settings, and sanity on digits."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch
from omegaconf import open_dict

from sparse_mu import evaluation, pipeline
from sparse_mu import keys as key_inputs
from sparse_mu.errors import ConfigError
from tests.conftest import TINY, compose_cfg
from tests.test_cache_keys import stage_keys


def _job(tmp_path, *overrides) -> pipeline.Job:
    return pipeline.setup(compose_cfg([*TINY, *overrides], tmp_path), tmp_path / "out")


def _with(job: pipeline.Job, **values) -> pipeline.Job:
    cfg = job.cfg.copy()
    with open_dict(cfg):
        for path, v in values.items():
            cfg[path] = v
    return dataclasses.replace(job, cfg=cfg)


def test_reference_seeds_key_the_store_and_eval_settings_never_do(tmp_path):
    job = _job(tmp_path, "pruner=dense")
    pruned = job.cache.key(key_inputs.base_inputs(job))
    today = key_inputs.reference_inputs(job, pruned)
    assert key_inputs.reference_inputs(job, pruned, job.seed) == today  # reference 0 is today's reference
    store = [job.cache.key(key_inputs.reference_inputs(job, pruned, s)) for s in range(4)]
    assert len(set(store)) == 4
    many = _job(tmp_path, "pruner=dense", "eval.references=8", "eval.unlearn_seeds=5", "eval.retain_sample=9",
                "eval.mia_privacy=true", "eval.batch_size=7")
    assert "eval" not in today
    assert [many.cache.key(key_inputs.reference_inputs(many, pruned, s)) for s in range(4)] == store


def test_the_unlearning_seed_moves_only_the_unlearning_key(tmp_path):
    job = _job(tmp_path)
    before = stage_keys(job)
    assert stage_keys(_with(job, unlearn_seed=job.seed)) == before  # spelled out: the same run
    after = stage_keys(_with(job, unlearn_seed=7))
    assert {s for s in before if before[s] != after[s]} == {"unlearn"}
    assert job.unlearn_seed == job.seed and _with(job, unlearn_seed=7).unlearn_seed == 7


@pytest.mark.parametrize(("overrides", "message"), [
    (["eval.references=0"], r"^eval\.references must be an integer >= 1; got 0"),
    (["eval.references=2"], r"^eval\.references must be >= 3 with per-example tests .*; got 2$"),
    (["eval.references=4", "eval.unlearn_seeds=1"], r"^eval\.unlearn_seeds must be >= 3 .*; got 1$"),
    (["eval.per_example=true", "eval.retrain_reference=false"], r"^eval\.retrain_reference must be true"),
    (["reference=retrain_then_prune"], r"^reference must be a Retrain reference chosen as unlearner@reference=NAME"),
    (["eval.per_example=maybe"], r"^eval\.per_example must be"),
    (["unlearn_seed=-1"], r"^unlearn_seed must be"),
    (["unlearner=retrain_then_prune"], r"^unlearner\.then_prune must be false \(unlearner=retrain_then_prune: "
                                       r"that is a Retrain reference only, unlearner@reference=retrain_then_prune\); got True$"),
])
def test_bad_settings_fail_before_training(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        _job(tmp_path, *overrides)
    assert not (tmp_path / "cache" / "base").exists()


def _gaussian_logits(n: int, shift: float, seed: int) -> torch.Tensor:
    """[n models, 40 examples, 3 classes]: the true class's logit ~ N(1 + shift_e, 1) per example."""
    g = torch.Generator().manual_seed(seed)
    z = torch.zeros(n, 40, 3, dtype=torch.float64)
    z[..., 0] = 1 + shift * torch.linspace(0.5, 1.5, 40) + torch.randn(n, 40, generator=g, dtype=torch.float64)
    return z


def test_score_tells_shifted_outputs_from_the_same_ones():
    labels = {p: torch.zeros(40, dtype=torch.long) for p in evaluation.PARTS}
    states = [{"w": torch.full((3,), float(i))} for i in range(16)]
    ref = {p: _gaussian_logits(16, 0.0, 1) for p in evaluation.PARTS}
    same = evaluation.score({p: _gaussian_logits(16, 0.0, 2) for p in evaluation.PARTS}, ref, labels, states, states)
    moved = evaluation.score({p: _gaussian_logits(16, 4.0, 2) for p in evaluation.PARTS}, ref, labels, states, states)
    assert 35 < same["forget_ulira_auc"] < 65 and moved["forget_ulira_auc"] > 95
    assert same["forget_F"] > moved["forget_F"] + 0.15 and same["forget_klom"] < moved["forget_klom"]
    assert same["forget_js"] < moved["forget_js"] and same["weight_l2"] == 0.0
    assert same["score"] == pytest.approx(same["forget_F"] * (same["RA_u"] / same["RA_r"]) * (same["TA_u"] / same["TA_r"]))


def test_unseen_retrain_is_indistinguishable_the_original_is_not_and_the_store_is_reused(tmp_path, caplog):
    """Class-wise forgetting on digits, 5 references and 5 unlearning seeds: Retrain with unseen
    seeds scores near chance, the original (trained on D) far from it; a second method and other
    evaluation settings build no reference again."""
    store = ["eval.references=5", "eval.unlearn_seeds=5", "pruner=dense", "forget=class"]
    caplog.set_level(logging.INFO, logger="sparse_mu")
    m = pipeline.run(compose_cfg([*TINY, *store, "unlearner=retrain", "unlearner.epochs=6", "unlearn_seed=100"], tmp_path), tmp_path / "a")
    pe, orig = m["per_example"], m["per_example_original"]
    assert m["per_example_seeds"] == {"references": [0, 1, 2, 3, 4], "unlearned": [100, 101, 102, 103, 104]}
    assert pe["reference"] == m["reference_kind"] == "retrain_with_mask"
    assert pe["forget_ulira_auc"] < 75 and orig["forget_ulira_auc"] > 95
    assert orig["forget_ulira_tpr_at_1fpr"] > 50 > pe["forget_ulira_tpr_at_1fpr"]
    # F is biased low with few models (sparse_mu.metrics.per_example.forgetting_quality): order only
    assert pe["forget_F"] >= orig["forget_F"] and pe["score"] >= orig["score"]
    assert pe["forget_klom"] < orig["forget_klom"] and pe["forget_js"] < orig["forget_js"]
    built = {p.name for p in (tmp_path / "cache" / "reference_model").iterdir() if p.is_dir()}
    assert len(built) == 5 and len(list((tmp_path / "cache" / "original_model").glob("*/meta.json"))) == 5
    caplog.clear()
    m2 = pipeline.run(compose_cfg([*TINY, *store, "unlearner=ft", "eval.retain_sample=50", "eval.mia_privacy=true"],
                                  tmp_path), tmp_path / "b")
    assert {p.name for p in (tmp_path / "cache" / "reference_model").iterdir() if p.is_dir()} == built
    assert "built and cached" not in " ".join(r.getMessage() for r in caplog.records if "reference_model" in r.getMessage())
    assert sum("reference_model: reusing" in r.getMessage() for r in caplog.records) == 5
    assert m2["per_example"]["unlearn_seeds"] == 5 and m2["unlearn_seed"] == 0


def test_retrain_then_prune_is_named_and_built_from_a_dense_model_on_the_retain_set(tmp_path):
    m = pipeline.run(compose_cfg([*TINY, "unlearner@reference=retrain_then_prune", "unlearner=ga"], tmp_path), tmp_path / "r")
    assert m["reference_kind"] == "retrain_then_prune" and m["retrain"]["RTE_s"] > 0
    assert len(list((tmp_path / "cache" / "base").glob("*/meta.json"))) == 2  # on D, and on D_r
    assert len(list((tmp_path / "cache" / "prune").glob("*/meta.json"))) == 2
    # its cost is both trainings on D_r: the dense model's steps plus the pruner's retraining
    metas = [json.loads(p.read_text()) for stage in ("base", "prune") for p in (tmp_path / "cache" / stage).glob("*/meta.json")]
    on_retain = [mt["steps"] for mt in metas if "retain_of" in json.dumps(mt["inputs"])]
    assert len(on_retain) == 2 and min(on_retain) > 0 and m["retrain"]["steps"] == sum(on_retain)
    assert m["cost_vs_retrain_steps"] == round(m["steps"] / sum(on_retain), 4)
