"""With W&B disabled the W&B logger is not built at all (it would write nothing, and importing
W&B and starting its no-op run cost seconds per job); the CSV logger still is."""

from __future__ import annotations

from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from sparse_mu.loggers import job_loggers

LOGGERS = {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "name": "csv", "version": ""},
           "wandb": {"_target_": "sparse_mu.loggers.WandbLogger", "project": "sparse_mu", "offline": True}}


def test_disabled_wandb_is_not_built(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    loggers = job_loggers(OmegaConf.create({"logger": LOGGERS}), tmp_path, {})
    assert [type(lg) for lg in loggers] == [CSVLogger]


def test_a_disabled_wandb_node_is_not_built(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = OmegaConf.create({"logger": {**LOGGERS, "wandb": {**LOGGERS["wandb"], "mode": "disabled"}}})
    assert [type(lg) for lg in job_loggers(cfg, tmp_path, {})] == [CSVLogger]
