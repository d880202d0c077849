"""Backdoor forgetting: trigger stamping, poisoned labels, the two ASR definitions, bad settings,
and a Trojan model whose backdoor FT removes."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from sparse_mu import pipeline
from sparse_mu.data import BackdoorForget, Digits, prepare
from sparse_mu.errors import ConfigError
from sparse_mu.metrics import attack_success, evaluate


@pytest.fixture(scope="module")
def digits():
    return prepare(Digits())


def test_stamp_sets_exactly_the_trigger_pixels():
    x = torch.full((2, 3, 8, 8), 7, dtype=torch.uint8)
    out = BackdoorForget(trigger_size=2, trigger_offset=1, trigger_value=200).stamp(x)
    expected = x.clone()
    expected[:, :, 5:7, 5:7] = 200  # rows/columns 5 and 6: 1 px from the bottom-right corner
    assert torch.equal(out, expected)
    assert (x == 7).all()  # the input is left alone
    corner = BackdoorForget(trigger_size=4, trigger_offset=0, trigger_value=0).stamp(x)
    assert (corner[..., 4:, 4:] == 0).all() and (corner[..., :4, :] == 7).all() and (corner[..., :, :4] == 7).all()


def test_poisoning_relabels_a_seeded_fraction_of_d(digits):
    spec = BackdoorForget(target_class=3, ratio=0.1, trigger_size=2, trigger_offset=0, trigger_value=255, seed=0)
    poisoned = spec.training_data(digits)
    idx = spec.poisoned(digits)
    assert len(idx) == round(0.1 * len(digits.train)) and torch.isin(idx, digits.train).all()
    assert (poisoned.y[idx] == 3).all()
    clean = torch.ones(len(digits.y), dtype=torch.bool)
    clean[idx] = False
    assert torch.equal(poisoned.y[clean], digits.y[clean]) and torch.equal(poisoned.x[clean], digits.x[clean])
    assert torch.equal(poisoned.x[idx], spec.stamp(digits.x[idx]))  # validation and test stay clean
    assert poisoned.fingerprint != digits.fingerprint
    assert poisoned.fingerprint != BackdoorForget(target_class=4, trigger_size=2).training_data(digits).fingerprint
    fs = spec.select(poisoned)
    assert torch.equal(fs.forget, idx) and fs.kind == "backdoor" and fs.backdoor is spec
    assert not torch.isin(fs.retain, idx).any() and len(fs.retain) + len(idx) == len(digits.train)
    assert torch.equal(spec.poisoned(digits), idx)
    assert not torch.equal(BackdoorForget(seed=1).poisoned(digits), idx)
    # the poisoned samples are not where the seeded training order starts (whole batches of one label)
    _, y, _ = next(iter(poisoned.loader(poisoned.train, batch_size=64, train=True, seed=0)))
    assert (y != 3).sum() > 32


def test_asr_counts_other_classes_and_legacy_counts_all():
    labels = torch.tensor([0, 0, 1, 2, 3])
    predicted = torch.tensor([0, 1, 0, 0, 3])
    probs = nn.functional.one_hot(predicted, 4).float()
    rates = attack_success(probs, labels, target=0)
    assert rates["ASR"] == pytest.approx(100 * 2 / 3)  # images of classes 1, 2, 3: two become 0
    assert rates["ASR_legacy"] == pytest.approx(100 * 3 / 5)  # all five: three predicted 0


class TriggerDetector(nn.Module):
    """Predicts `target` when the bottom-right pixel is bright, else class 1."""

    def __init__(self, target: int):
        super().__init__()
        self.target = target

    def forward(self, x):
        out = torch.zeros(len(x), 10)
        out[:, 1] = 1.0
        out[x[:, 0, -1, -1] > 1.0, self.target] = 5.0  # normalised: above the mean + 2 std
        return out


def test_evaluate_reports_sa_and_asr_on_triggered_test_images(digits):
    spec = BackdoorForget(target_class=2, trigger_size=1, trigger_offset=0, trigger_value=255)
    data = spec.training_data(digits)
    m = evaluate(TriggerDetector(2), data, spec.select(data), seed=0)
    test_y = data.y[data.test]
    assert m["SA"] == pytest.approx(100 * (test_y == 1).float().mean().item()) == pytest.approx(m["TA"])
    assert m["ASR"] == m["ASR_legacy"] == 100.0


@pytest.mark.parametrize(("settings", "key"), [
    ({"trigger_size": 9}, "forget.trigger_size must be at most 6"),  # 2 px offset: 6 px fit in 8x8
    ({"trigger_size": 3, "trigger_offset": 6}, "forget.trigger_size must be at most 2"),
    ({"target_class": 10}, "forget.target_class must be an integer in [0, 9]"),
    ({"target_class": -1}, "forget.target_class"),
    ({"ratio": 0.0}, "forget.ratio must be the poisoned fraction of D, in (0, 1)"),
    ({"ratio": 1.0}, "forget.ratio"),
    ({"ratio": 1.5}, "forget.ratio"),
    ({"trigger_value": 256}, "forget.trigger_value"),
])
def test_bad_backdoor_settings(digits, settings, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        BackdoorForget(**settings).training_data(digits)


def test_fine_tuning_removes_the_backdoor_of_a_sparse_trojan_model(tiny_cfg, tmp_path):
    cfg = tiny_cfg("+experiment=backdoor_tiny", "unlearner.budget=null", "unlearner.epochs=5", "eval.retrain_reference=false")
    m = pipeline.run(cfg, tmp_path / "run")
    assert m["sparsity"] == pytest.approx(99.0, abs=0.01)
    assert m["ASR_before"] > 90 and m["original"]["ASR_legacy"] >= m["original"]["ASR"] - 10
    assert m["ASR"] < m["ASR_before"] - 30  # FT on the clean retain set removes most of it
    assert abs(m["SA"] - m["SA_before"]) < 3 and m["SA_before"] > 90
    assert m["SA"] == m["TA"]  # no class is left out: TA is the clean test accuracy
