"""Sub-class forgetting: coarse labels for training, one fine class forgotten."""

from __future__ import annotations

import pytest
import torch

from sparse_mu import pipeline
from sparse_mu.data import Digits, SubClassForget, prepare
from sparse_mu.data.forget import CIFAR100_COARSE
from sparse_mu.errors import ConfigError

PAIRS = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # digits 0-1 -> coarse 0, 2-3 -> coarse 1, ...


@pytest.fixture(scope="module")
def digits():
    return prepare(Digits())


def test_models_train_on_coarse_labels_and_forget_one_fine_class(digits):
    spec = SubClassForget(fine_class=3, coarse=PAIRS)
    data = spec.training_data(digits)
    assert data.num_classes == 5 and torch.equal(data.y, torch.tensor(PAIRS)[digits.y])
    assert data.fingerprint != digits.fingerprint
    fs = spec.select(data)
    assert torch.equal(fs.forget, digits.train[digits.y[digits.train] == 3])
    assert (data.y[fs.forget] == 1).all()  # they keep their coarse label, 1
    # class 2 shares the coarse class and is retained; the test set leaves out only fine class 3
    assert (digits.y[fs.retain] == 2).sum() > 0
    left_out = digits.test[fs.forgotten_test(data)]
    assert torch.equal(left_out, digits.test[digits.y[digits.test] == 3])
    assert fs.to_json()["fine_class"] == 3 and fs.kind == "subclass"


def test_count_is_seeded(digits):
    spec = SubClassForget(fine_class=3, coarse=PAIRS, count=10, seed=1)
    a = spec.select(spec.training_data(digits)).forget
    assert len(a) == 10 and (digits.y[a] == 3).all()
    assert torch.equal(a, spec.select(spec.training_data(digits)).forget)


def test_cifar100_superclasses():
    assert len(CIFAR100_COARSE) == 100 and sorted(set(CIFAR100_COARSE)) == list(range(20))
    assert all(CIFAR100_COARSE.count(c) == 5 for c in range(20))  # five fine classes each
    assert CIFAR100_COARSE[0] == 4 and CIFAR100_COARSE[99] == 13  # apple: fruit and veg.; worm: non-insect invertebrates


@pytest.mark.parametrize("kwargs, key", [
    ({"coarse": "cifar100"}, "forget.coarse"),  # digits has 10 classes, not 100
    ({"coarse": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}, "forget.coarse"),  # nothing coarser
    ({"coarse": [0, 0, 1, 1, 2, 2, 3, 3, 5, 5]}, "forget.coarse"),  # a gap
    ({"coarse": PAIRS, "fine_class": 10}, "forget.fine_class"),
])
def test_bad_mappings(digits, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        SubClassForget(**kwargs).training_data(digits)


def test_subclass_end_to_end(tiny_cfg, tmp_path):
    m = pipeline.run(tiny_cfg("forget=subclass", "forget.coarse=[0,0,1,1,2,2,3,3,4,4]", "forget.fine_class=3",
                              "arch.width=8", "trainer.limit_train_batches=2", "reference.epochs=2",
                              "unlearner.epochs=1"), tmp_path / "run")
    assert "TA_forgotten_class" in m and m["class_idx"] is None and m["forget_size"] > 100
    assert m["retrain"]["UA"] >= 0
