"""The tuning studies' objective (sparse_mu/tune.py) and what a job returns to Hydra's sweeper."""

import math

import pytest
from omegaconf import OmegaConf

from sparse_mu.errors import ConfigError
from sparse_mu.tune import FAILED, PENALTY, objective, trial_value
from sparse_mu.validation import validate
from tests.conftest import CONF, compose_cfg


def _m(ra=100.0, retrain_ra=100.0, da=5.0, damaged=False):
    return {"RA": ra, "retrain": {"RA": retrain_ra}, "disparity_avg": da, "damaged": damaged}


def test_a_valid_run_scores_its_disparity_average():
    assert objective(_m(ra=99.5, da=3.25)) == 3.25  # 0.5 points below Retrain: within the margin


def test_a_damaged_or_ra_losing_run_ranks_below_every_valid_one():
    low_ra = objective(_m(ra=97.0, da=0.1))  # 3 points below Retrain's RA (> 1)
    flagged = objective(_m(ra=100.0, da=0.1, damaged=True))  # e.g. a retain-loss spike
    assert low_ra == PENALTY + 3.0 and flagged == PENALTY
    assert min(low_ra, flagged) > objective(_m(da=99.9))  # worse than any Disparity Average
    assert objective(_m(ra=90.0, da=0.0)) > low_ra  # more damage ranks lower
    assert objective(_m(ra=98.5, da=2.0), ra_margin=2.0) == 2.0
    assert objective(_m(da=math.nan)) == PENALTY


def test_the_job_returns_metrics_unless_a_study_asks_for_its_objective():
    m = _m(da=4.0)
    assert trial_value(OmegaConf.create({"tune": {"objective": None, "ra_margin": 1.0}}), m) is m
    study = OmegaConf.create({"tune": {"objective": "disparity_ra", "ra_margin": 1.0}})
    assert trial_value(study, m) == 4.0
    assert trial_value(study, None) == FAILED  # a failed trial: the worst value, the sweep goes on
    with pytest.raises(ValueError, match="Retrain reference"):
        objective({"RA": 100.0, "retrain": None, "disparity_avg": None})


def test_an_unknown_objective_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^tune\.objective must be"):
        validate(compose_cfg(["tune.objective=accuracy"]))


@pytest.mark.parametrize("study", sorted(p.stem for p in (CONF / "experiment").glob("tune_*.yaml")))
def test_every_study_searches_at_the_budget_on_a_held_out_seed_and_class(study):
    cfg = compose_cfg([f"+experiment={study}", "pruner=dense"])
    assert cfg.tune.objective == "disparity_ra" and cfg.unlearner.budget <= 0.1
    assert cfg.seed not in (0, 1, 2) and cfg.forget.class_idx != 0  # the reported tables' seeds, class
    text = (CONF / "experiment" / f"{study}.yaml").read_text()
    assert "override /hydra/sweeper: optuna" in text and "n_trials:" in text


def test_tuned_budget_files_name_their_study():
    for p in sorted((CONF / "tuned" / "budget").glob("*.yaml")):
        text = p.read_text()
        for word in ("study:", "trials:", "budget:", "objective:", "best value:"):
            assert word in text, f"{p.name} does not name its {word.rstrip(':')}"
        dataset = max((d.stem for d in (CONF / "dataset").glob("*.yaml") if p.stem.startswith(d.stem + "_")), key=len)
        method, pruner = p.stem[len(dataset) + 1:].rsplit("_", 1)
        tuned = compose_cfg([f"dataset={dataset}", f"unlearner={method}", f"pruner={pruner}", "tuning=budget"])
        assert tuned.unlearner != compose_cfg([f"dataset={dataset}", f"unlearner={method}", f"pruner={pruner}"]).unlearner
