"""Transfer learning: several forgotten classes, target images adapted to the source model,
frozen features, and the three linear probes end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sparse_mu import pipeline
from sparse_mu.data import ClassForget, Digits, Npz, prepare
from sparse_mu.errors import ConfigError
from sparse_mu.metrics import evaluate
from sparse_mu.models import SmallCNN
from sparse_mu.transfer import adapt, feature_extractor, features


@pytest.fixture(scope="module")
def digits():
    return prepare(Digits())


def test_several_classes_are_forgotten_together(digits):
    fs = ClassForget(class_idx=[3, 5]).select(digits)
    assert fs.class_idx == [3, 5] and set(digits.y[fs.forget].tolist()) == {3, 5}
    assert not torch.isin(digits.y[fs.retain], torch.tensor([3, 5])).any()
    assert not torch.isin(digits.y[fs.test_indices(digits)], torch.tensor([3, 5])).any()
    assert ClassForget(class_idx=[3]).select(digits).class_idx == 3 == ClassForget(class_idx=3).select(digits).class_idx
    assert fs.to_json()["class_idx"] == [3, 5]
    m = evaluate(SmallCNN(10, 1, 8), digits, fs, seed=0)
    assert "TA_forgotten_class" in m


@pytest.mark.parametrize("bad", [[3, 3], list(range(10)), [2, 10], []])
def test_bad_class_lists(digits, bad):
    with pytest.raises(ConfigError, match=r"forget\.class_idx must be an integer in \[0, 9\]"):
        ClassForget(class_idx=bad).select(digits)


def _npz(path, size: int, channels: int, n: int = 300, classes: int = 3):
    """Images whose class is their brightness: a linear probe on any features can tell them apart."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = (y[:, None, None, None] * 80 + rng.integers(0, 40, (n, size, size, channels))).astype(np.uint8)
    np.savez(path, x_train=x, y_train=y)


def test_target_images_are_adapted_to_the_source(digits, tmp_path):
    _npz(tmp_path / "rgb.npz", 12, 3)
    rgb = prepare(Npz(path=str(tmp_path / "rgb.npz")))
    grey = adapt(rgb, 1, digits.mean, digits.std)
    assert grey.x.shape == (300, 1, 12, 12) and torch.equal(grey.mean, digits.mean) and not grey.augment.active
    assert torch.equal(grey.x[:, 0], rgb.x.float().mean(1).round().to(torch.uint8))
    colour = adapt(digits, 3, torch.zeros(3), torch.ones(3))
    assert colour.x.shape[1] == 3 and torch.equal(colour.x[:, 2], digits.x[:, 0])
    two = adapt(rgb, 3, torch.zeros(3), torch.ones(3))
    two.x = two.x[:, :2]
    with pytest.raises(ConfigError, match=r"transfer\.dataset must be images with 3 channels"):
        adapt(two, 3, torch.zeros(3), torch.ones(3))
    # features: the head is gone, the source net untouched, images resized to the source's size
    net = SmallCNN(10, 1, 8, width=4)
    extractor = feature_extractor(net)
    x, y = features(extractor, grey.loader(grey.train, batch_size=50, train=False), size=8)
    assert x.shape == (len(grey.train), 16) and torch.equal(y, grey.y[grey.train])
    assert isinstance(net.fc, torch.nn.Linear) and not extractor.training


def test_linear_probes_end_to_end(tiny_cfg, tmp_path):
    _npz(tmp_path / "target.npz", 12, 3)
    cfg = tiny_cfg("forget.class_idx=[1,2]", "pruner.sparsity=0.5", "transfer=linear_probe",
                   "dataset@transfer.dataset=npz", f"transfer.dataset.path={tmp_path / 'target.npz'}",
                   "transfer.probe.epochs=5")
    m = pipeline.run(cfg, tmp_path / "run")
    assert set(m["transfer_acc"]) == set(m["transfer_time_s"]) == {"original", "retrain", "unlearned"}
    for route, acc in m["transfer_acc"].items():
        assert 50 < acc <= 100, route  # brightness classes: far above chance (33 %)
    assert m["transfer_time_s"]["retrain"] >= m["retrain"]["RTE_s"]
    assert m["transfer_time_s"]["unlearned"] >= m["RTE_s"] and m["transfer_time_s"]["original"] > 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["class_idx"] == [1, 2]
    assert len(list((tmp_path / "cache" / "probe").glob("*/meta.json"))) == 2  # original and Retrain


@pytest.mark.parametrize(("overrides", "message"), [
    (["dataset@transfer.dataset=npz", "transfer.dataset.path=nowhere.npz"], "transfer.dataset.path must name an existing .npz file"),
    (["transfer.probe.lr=0"], "transfer.probe.lr must be > 0"),
    (["transfer.probe.epochs=0"], "transfer.probe.epochs must be an integer >= 1"),
])
def test_bad_transfer_settings_fail_before_training(tiny_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        pipeline.setup(tiny_cfg("transfer=linear_probe", *overrides), tmp_path / "out")
    assert not (tmp_path / "cache").exists()
