"""Library code in place of ours gives the same results: accuracy (torchmetrics), MIA-Privacy's
balanced accuracy (scikit-learn), the loop timer (Lightning Timer) and `last.ckpt`
(Lightning ModelCheckpoint)."""

from __future__ import annotations

import math
import time

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sparse_mu.callbacks import LAST, StageTimer, last_checkpoint, timing
from sparse_mu.metrics import accuracy, attack_success, mia_privacy
from sparse_mu.metrics.mia import _attack, _take, features


def test_accuracy_is_top1_in_percent():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, 7, generator=g)
    labels = torch.randint(0, 7, (1000,), generator=g)
    ours = 100.0 * (logits.argmax(1) == labels).float().mean().item()  # the hand-written version
    assert accuracy(logits, labels) == ours
    assert accuracy(torch.softmax(logits, 1), labels) == ours
    assert accuracy(torch.eye(3), torch.tensor([0, 1, 0])) == pytest.approx(200 / 3)
    assert math.isnan(accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))


def test_attack_success_rates():
    probs = torch.eye(3)[[0, 1, 2, 2, 2]]  # predictions 0, 1, 2, 2, 2
    labels = torch.tensor([0, 1, 0, 1, 2])  # the last one is of the target class
    asr = attack_success(probs, labels, target=2)
    assert asr["ASR"] == pytest.approx(50.0)  # 2 of the 4 non-target images hit the target
    assert asr["ASR_legacy"] == pytest.approx(60.0)
    assert math.isnan(attack_success(probs[:1], torch.tensor([2]), target=2)["ASR"])


def _outputs(confidence: float, n: int, seed: int):
    rng = np.random.default_rng(seed)
    c = np.clip(rng.normal(confidence, 0.1, n), 0.11, 0.999)
    probs = np.stack([c] + [(1 - c) / 9] * 9, 1)
    return torch.tensor(probs, dtype=torch.float32), torch.zeros(n, dtype=torch.long)


def test_mia_privacy_is_the_balanced_attack_accuracy():
    retain, test = _outputs(0.9, 400, 0), _outputs(0.8, 200, 1)
    for seed in range(3):  # the hand-written version: mean of the two recalls
        g = torch.Generator().manual_seed(seed)
        t, r = torch.randperm(200, generator=g), torch.randperm(400, generator=g)
        clf = _attack(_take(retain, r[:100]), _take(test, t[:100]), "confidence")
        pred_in = clf.predict(features(*_take(retain, r[100:200]), "confidence"))
        pred_out = clf.predict(features(*_take(test, t[100:200]), "confidence"))
        ours = 100.0 * 0.5 * (float((pred_in == 1).mean()) + float((pred_out == 0).mean()))
        assert 55 < ours < 95  # an attack that is neither blind nor perfect
        assert mia_privacy(retain, test, seed=seed) == ours


class Tiny(L.LightningModule):
    """A linear model on random data; `setup` and each step sleep, to tell them apart."""

    def __init__(self, setup_s: float = 0.0, step_s: float = 0.0):
        super().__init__()
        self.net, self.setup_s, self.step_s = nn.Linear(4, 2), setup_s, step_s

    def setup(self, stage: str) -> None:
        time.sleep(self.setup_s)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)),
                          batch_size=8)

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_s)
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(epochs: int, callbacks: list, **kw) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, callbacks=callbacks, accelerator="cpu", logger=False,
                     enable_progress_bar=False, enable_model_summary=False, **kw)


def test_stage_timer_counts_the_loop_alone():
    timer = StageTimer()
    _trainer(2, [timer], enable_checkpointing=False).fit(Tiny(setup_s=1.0, step_s=0.05))
    assert 8 * 0.05 <= timer.seconds < 1.0  # 8 steps of 50 ms, not the 1 s setup


def test_stage_timer_synchronises_the_gpu(monkeypatch):
    synced = []
    monkeypatch.setattr(timing.torch.cuda, "synchronize", lambda device: synced.append(device))
    timing._sync(torch.device("cpu"))
    timing._sync(torch.device("cuda", 1))
    assert synced == [torch.device("cuda", 1)]


def test_last_checkpoint_is_one_file_every_n_epochs(tmp_path):
    module = Tiny()
    _trainer(3, [last_checkpoint(tmp_path, every_n_epochs=2)], enable_checkpointing=True).fit(module)
    assert [p.name for p in tmp_path.iterdir()] == [LAST]
    state = torch.load(tmp_path / LAST, weights_only=True)
    assert state["epoch"] == 1  # written after epochs 2 (index 1), not after epoch 3
    resumed = Tiny()
    _trainer(3, [last_checkpoint(tmp_path, every_n_epochs=1)], enable_checkpointing=True).fit(
        resumed, ckpt_path=tmp_path / LAST, weights_only=True)
    for a, b in zip(module.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)  # the resumed epoch 3 ends where the uninterrupted one did
    assert [p.name for p in tmp_path.iterdir()] == [LAST]
    assert torch.load(tmp_path / LAST, weights_only=True)["epoch"] == 2
