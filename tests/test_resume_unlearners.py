"""Every iterative unlearner, interrupted after epoch 1 and resumed from its checkpoint, ends
with the weights of an uninterrupted run: optimiser momentum, LR schedule, data order, the L1
schedule, SCRUB's teacher and the mask all survive the checkpoint."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from sparse_mu.callbacks import MaskEnforcer
from sparse_mu.data import RandomForget
from sparse_mu.models import SmallCNN
from sparse_mu.pruning import BaseWeights, Mask
from sparse_mu.pruning.pruners import magnitude_scores
from sparse_mu.unlearn import (
    SCRUB,
    FineTune,
    GradientAscent,
    L1Sparse,
    NegGradPlus,
    RandomLabels,
    Retrain,
    SalUn,
    SFRon,
    UnlearnTask,
)
from tests.tiny import small_digits

LOOP = {"epochs": 3, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step"}
METHODS = {
    "ft": (FineTune, LOOP),
    "ga": (GradientAscent, {**LOOP, "lr": 0.005}),
    "l1_sparse": (L1Sparse, {**{k: v for k, v in LOOP.items() if k != "schedule"}, "lr_schedule": "step",
                             "gamma": 1e-3}),
    "rl": (RandomLabels, LOOP),
    "salun": (SalUn, {**LOOP, "ratio": 0.5}),
    "neggrad_plus": (NegGradPlus, {**LOOP, "beta": 0.2}),
    "scrub": (SCRUB, {**LOOP, "forget_epochs": 2, "forget_batch_size": 16}),
    "retrain": (Retrain, LOOP),
    "sfr_on": (SFRon, {**LOOP, "forget_freq": 2}),
}


@pytest.fixture(scope="module")
def setup():
    data = small_digits()
    torch.manual_seed(0)
    net = SmallCNN(10, 1, 8, width=8)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(1)
    trained = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in init.items()}
    net.load_state_dict(trained)
    mask = Mask.from_scores(magnitude_scores(net), 0.5)
    task = UnlearnTask(data, RandomForget(count=40).select(data), mask, BaseWeights(init, init, trained))
    return task, trained


def _module(name, task, trained):
    torch.manual_seed(0)
    net = SmallCNN(10, 1, 8, width=8)
    net.load_state_dict(trained)
    task.mask.apply_(net)
    cls, kwargs = METHODS[name]
    return cls(net, task, **kwargs)


def _trainer(max_epochs, tmp_path, mask):
    return L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
                     callbacks=[MaskEnforcer(mask)])


@pytest.mark.parametrize("name", list(METHODS))  # SalUn too: its saliency mask is in the checkpoint
def test_interrupted_and_resumed_equals_uninterrupted(name, setup, tmp_path):
    task, trained = setup
    whole = _module(name, task, trained)
    _trainer(3, tmp_path, task.mask).fit(whole)

    first = _module(name, task, trained)
    stopped = _trainer(1, tmp_path, task.mask)
    stopped.fit(first)
    stopped.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = _module(name, task, trained)
    _trainer(3, tmp_path, task.mask).fit(resumed, ckpt_path=tmp_path / "epoch1.ckpt")

    moved = False
    for (k, a), b in zip(whole.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=k)
        moved |= not torch.equal(a, first.net.state_dict()[k])
    assert moved, "epochs 2-3 changed nothing: the test would not see a bad resume"
