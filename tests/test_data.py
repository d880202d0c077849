"""Splits, forget sets and loaders: fixed, seeded, disjoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparse_mu.data import Augment, ClassForget, Digits, Npz, RandomForget, prepare
from sparse_mu.errors import ConfigError


@pytest.fixture(scope="module")
def data():
    return prepare(Digits())


def test_split_is_fixed_stratified_and_disjoint(data):
    again = prepare(Digits())
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(data, part), getattr(again, part))
    allidx = torch.cat([data.train, data.val, data.test])
    assert len(allidx.unique()) == len(allidx) == 1797
    # 20 % test, then 10 % of every class of the rest to validation
    assert len(data.test) == pytest.approx(0.2 * 1797, abs=10)
    for c in range(10):
        pool = (data.y[data.train] == c).sum() + (data.y[data.val] == c).sum()
        assert (data.y[data.val] == c).sum() == round(0.1 * int(pool))
    assert not torch.equal(prepare(Digits(split_seed=1)).train, data.train)


def test_class_forget(data):
    fs = ClassForget(class_idx=3).select(data)
    assert (data.y[fs.forget] == 3).all() and not (data.y[fs.retain] == 3).any()
    assert len(fs.forget) + len(fs.retain) == len(data.train)
    assert not torch.isin(fs.forget, fs.retain).any()
    assert (data.y[fs.test_indices(data)] != 3).all()
    some = ClassForget(class_idx=3, count=10, seed=1).select(data)
    assert len(some.forget) == 10 and torch.isin(some.forget, fs.forget).all()


def test_random_forget_is_seeded(data):
    a, b, c = (RandomForget(fraction=0.1, seed=s).select(data) for s in (0, 0, 1))
    assert torch.equal(a.forget, b.forget) and not torch.equal(a.forget, c.forget)
    assert len(a.forget) == round(0.1 * len(data.train))
    assert len(RandomForget(count=17).select(data).forget) == 17
    assert len(a.forget.unique()) == len(a.forget) and torch.isin(a.forget, data.train).all()


@pytest.mark.parametrize(("spec", "key"), [
    (ClassForget(class_idx=10), "forget.class_idx"),
    (ClassForget(class_idx=-1), "forget.class_idx"),
    (ClassForget(class_idx=0, count=0), "forget.count"),
    (RandomForget(fraction=1.0), "forget.fraction"),
    (RandomForget(fraction=0.0), "forget.fraction"),
])
def test_bad_forget_settings(data, spec, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        spec.select(data)


def test_loader_covers_indices_once_per_epoch(data):
    loader = data.loader(data.train, batch_size=100, train=True, seed=0)
    seen = torch.cat([idx for _, _, idx in loader])
    assert torch.equal(seen.sort().values, data.train)
    assert len(loader) == -(-len(data.train) // 100)
    first = torch.cat([idx for _, _, idx in loader])
    loader.sampler.set_epoch(1)
    second = torch.cat([idx for _, _, idx in loader])
    assert not torch.equal(first, second)
    loader.sampler.set_epoch(0)
    assert torch.equal(first, torch.cat([idx for _, _, idx in loader]))


def test_eval_loader_is_normalised_and_ordered(data):
    x, y, idx = next(iter(data.loader(data.test, batch_size=len(data.test), train=False)))
    assert torch.equal(idx, data.test) and torch.equal(y, data.y[data.test])
    expected = (data.x[data.test].float() / 255 - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)


def test_augment_crop_and_flip():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    g = torch.Generator().manual_seed(0)
    flipped = Augment(crop_padding=0, flip=True)(x, g)
    for b in range(2):  # each image is either itself or its mirror
        assert torch.equal(flipped[b], x[b]) or torch.equal(flipped[b], x[b].flip(2))
    cropped = Augment(crop_padding=2)(x, torch.Generator().manual_seed(1))
    assert cropped.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):  # every crop is a 4x4 window of the zero-padded image
        assert any(torch.equal(cropped[b], padded[b, :, i:i + 4, j:j + 4]) for i in range(5) for j in range(5))


def test_npz_errors(tmp_path):
    with pytest.raises(ConfigError, match="dataset.path"):
        Npz(path=str(tmp_path / "missing.npz")).load()
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8)))
    with pytest.raises(ConfigError, match="x_train"):
        Npz(path=str(bad)).load()
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable"):
        Npz(path=str(junk)).load()
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(3, np.int64))
    with pytest.raises(ConfigError, match="labels"):
        Npz(path=str(mismatch)).load()


def test_shared_cifar10_small(tmp_path):
    from tests.conftest import CIFAR_SMALL

    if not CIFAR_SMALL.is_file():
        pytest.skip("../shared/data/cifar10_small.npz not present")
    data = prepare(Npz(path=str(CIFAR_SMALL)))
    assert data.x.shape[1:] == (3, 32, 32) and data.num_classes == 10
    assert len(data.test) == 2000 and len(data.train) + len(data.val) == 10000
    assert torch.allclose(data.mean, torch.tensor([0.4934, 0.4831, 0.4470]), atol=2e-3)


def test_loader_order_is_not_the_forget_draw(data):
    """A random forget set and the first epoch's order are independent draws for the same seed
    (if they coincided, D_f would come first in epoch 0 of base training)."""
    for seed in (0, 1):
        forget = RandomForget(fraction=0.1, seed=seed).select(data).forget
        first = next(iter(data.loader(data.train, batch_size=len(forget), train=True, seed=seed)))[2]
        assert torch.isin(first, forget).float().mean() < 0.3
