"""Console: progress names the stage and counts epochs 1..E without `v_num`; a missing npz says
where to put it; relative data paths resolve from the clone too."""

from __future__ import annotations

import logging
import os

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from sparse_mu.callbacks.progress import QuietProgress, StageBar, progress_bar
from sparse_mu.data.sources import REPO, Npz
from sparse_mu.errors import ConfigError


class Tiny(L.LightningModule):
    def __init__(self, stage: str):
        super().__init__()
        self.stage, self.layer = stage, torch.nn.Linear(2, 1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(8, 2), batch_size=4)

    def training_step(self, x, _):
        loss = self.layer(x).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(stage: str, bar, epochs: int, tmp_path, recorder: Callback | None = None) -> None:
    trainer = L.Trainer(max_epochs=epochs, callbacks=[bar, *([recorder] if recorder else [])],
                        logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(Tiny(stage))


def test_rich_bar_names_the_stage_counts_from_one_and_hides_v_num(tmp_path):
    bar, seen = StageBar(leave=False), []

    class Record(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append((bar._get_train_description(trainer.current_epoch), bar.get_metrics(trainer, pl_module)))

    _fit("prune 1", bar, 3, tmp_path, Record())
    assert [d for d, _ in seen] == ["prune 1: epoch 1/3", "prune 1: epoch 2/3", "prune 1: epoch 3/3"]
    assert all("v_num" not in m for _, m in seen) and "train/loss" in seen[-1][1]


def test_log_lines_name_the_stage_and_count_from_one(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sparse_mu"):
        _fit("retrain reference", QuietProgress(lines=5), 3, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "sparse_mu"]
    assert [m.split(" loss")[0] for m in lines] == [f"retrain reference: epoch {e}/3" for e in (1, 2, 3)]
    assert not [m for m in lines if "v_num" in m or "epoch 0/" in m]


def test_progress_bar_choice():
    assert isinstance(progress_bar(interactive=True), StageBar)
    assert isinstance(progress_bar(interactive=False), QuietProgress)


def test_missing_cifar10_small_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        Npz(name="cifar10_small", path="../nowhere/cifar10_small.npz").load()
    message = str(e.value)
    assert str(tmp_path.parent / "nowhere" / "cifar10_small.npz") in message  # absolute places
    assert "SPARSE_MU_SHARED_DATA" in message and "\n" not in message


def test_relative_data_path_resolves_from_the_clone(tmp_path, monkeypatch):
    """The README's `dataset=cifar10_small` (../shared/data/...) from any working directory."""
    data = tmp_path / "data" / "d.npz"
    data.parent.mkdir()
    np.savez(data, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, 0, 1]))
    relative = os.path.relpath(data, REPO)
    elsewhere = tmp_path / "a" / "b" / "c"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert not (elsewhere / relative).exists()
    assert Npz(path=relative).load().x_train.shape == (4, 1, 8, 8)
