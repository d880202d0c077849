"""RL's label schedule and pass order, and SalUn's saliency mask on a sparse model and on resume
(issue 18; docs/differences.md)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from sparse_mu.callbacks import MaskEnforcer, last_checkpoint
from sparse_mu.data import ClassForget, Digits, prepare
from sparse_mu.errors import ConfigError
from sparse_mu.models import SmallCNN
from sparse_mu.pruning import BaseWeights, Mask
from sparse_mu.pruning.pruners import magnitude_scores
from sparse_mu.unlearn import RandomLabels, SalUn, UnlearnTask
from tests.conftest import compose_cfg

LOOP = {"epochs": 2, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


@pytest.fixture(scope="module")
def digits():
    return prepare(Digits())


def net_and_task(data, sparsity: float | None, seed: int = 0):
    torch.manual_seed(seed)
    net = SmallCNN(10, 1, 8, width=8)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    mask = Mask.from_scores(magnitude_scores(net), sparsity) if sparsity is not None else None
    if mask is not None:
        mask.apply_(net)
    return net, UnlearnTask(data, ClassForget(0).select(data), mask, BaseWeights(state, state, state))


def trainer(epochs: int, callbacks=()) -> L.Trainer:
    saving = any(isinstance(c, ModelCheckpoint) for c in callbacks)  # Lightning refuses one otherwise
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=saving, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu", callbacks=list(callbacks))


class Seen(RandomLabels):
    """RL that records (epoch, dataset indices, training labels) of every batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        _, y, idx = batch
        new = self.relabel[idx]
        self.seen.append((self.current_epoch, idx.clone(), torch.where(new >= 0, new, y).clone()))
        return super().training_step(batch, batch_idx)


def labels_by_epoch(module: Seen, epoch: int) -> dict[int, int]:
    return {int(i): int(t) for e, idx, lab in module.seen if e == epoch for i, t in zip(idx, lab, strict=True)}


# -- RL ---------------------------------------------------------------------------------------

def test_rl_defaults_are_the_published_schedule():
    node = compose_cfg(["unlearner=rl"]).unlearner
    assert (node.order, node.relabel) == ("forget_then_retain", "per_epoch")
    salun = compose_cfg(["unlearner=salun"]).unlearner
    assert (salun.order, salun.relabel) == ("forget_then_retain", "per_epoch")


def test_rl_per_epoch_labels_are_redrawn_seeded_and_may_be_the_true_one(digits):
    net, task = net_and_task(digits, None)
    module = Seen(net, task, **LOOP)
    trainer(2).fit(module)
    f, r = task.forget.forget.tolist(), task.forget.retain.tolist()
    first, second = labels_by_epoch(module, 0), labels_by_epoch(module, 1)
    assert set(first) == set(second) == set(f) | set(r)  # every sample once per epoch
    assert all(first[i] == int(digits.y[i]) == second[i] for i in r)  # D_r keeps its labels
    lab0, lab1 = torch.tensor([first[i] for i in f]), torch.tensor([second[i] for i in f])
    assert (lab0 != lab1).float().mean() > 0.5  # redrawn: about 90 % differ for 10 classes
    assert (lab0 == digits.y[f]).any()  # uniform over all classes, the true one included
    assert set(torch.cat([lab0, lab1]).tolist()) == set(range(10))  # the last class too
    again = Seen(*net_and_task(digits, None), **LOOP)
    trainer(2).fit(again)
    assert labels_by_epoch(again, 1) == second  # seeded by (seed, epoch)


def test_rl_fixed_labels_are_always_wrong_and_never_change(digits):
    net, task = net_and_task(digits, None)
    module = Seen(net, task, **LOOP, relabel="fixed")
    trainer(2).fit(module)
    f = task.forget.forget.tolist()
    first, second = labels_by_epoch(module, 0), labels_by_epoch(module, 1)
    assert all(first[i] == second[i] != int(digits.y[i]) for i in f)


def test_rl_forget_then_retain_is_a_forget_pass_then_a_retain_pass(digits):
    net, task = net_and_task(digits, None)
    module = Seen(net, task, **LOOP)
    trainer(2).fit(module)
    n_f = len(task.forget.forget)
    forget = set(task.forget.forget.tolist())
    for epoch in (0, 1):
        order = torch.cat([idx for e, idx, _ in module.seen if e == epoch]).tolist()
        assert set(order[:n_f]) == forget and not forget & set(order[n_f:])
    orders = [torch.cat([idx for e, idx, _ in module.seen if e == epoch])[:n_f] for epoch in (0, 1)]
    assert not torch.equal(*orders)  # each pass reshuffled per epoch


def test_rl_joint_mixes_forget_and_retain_in_one_stream(digits):
    net, task = net_and_task(digits, None)
    module = Seen(net, task, **LOOP, order="joint")
    trainer(1).fit(module)
    forget = set(task.forget.forget.tolist())
    mixed = [bool(forget & set(idx.tolist())) and not set(idx.tolist()) <= forget for _, idx, _ in module.seen]
    assert sum(mixed) > len(mixed) // 2  # most batches hold both
    assert len(module.seen) == len(module.train_dataloader())


@pytest.mark.parametrize(("kwargs", "message"), [({"order": "alternate"}, "unlearner.order must be one of"),
                                                 ({"relabel": "always"}, "unlearner.relabel must be one of")])
def test_rl_bad_settings(digits, kwargs, message):
    net, task = net_and_task(digits, None)
    with pytest.raises(ConfigError, match=message):
        RandomLabels(net, task, **LOOP, **kwargs)


# -- SalUn ------------------------------------------------------------------------------------

def forget_grads(net, data, forget) -> dict[str, torch.Tensor]:
    """|d CE summed over D_f / d theta|, eval mode and transforms, plain autograd."""
    net.eval()
    net.zero_grad()
    x, y, _ = next(iter(data.loader(forget.forget, batch_size=len(forget.forget), train=False)))
    F.cross_entropy(net(x), y, reduction="sum").backward()
    return {k: p.grad.abs().clone() for k, p in net.named_parameters()}


@pytest.mark.parametrize("sparsity", [0.95, 0.5, None])
def test_salun_ratio_counts_the_weights_that_can_move(digits, sparsity):
    net, task = net_and_task(digits, sparsity)
    module = SalUn(net, task, **LOOP, ratio=0.5)
    module.on_train_start()
    keep = task.mask.tensors if task.mask is not None else {}
    movable = {k: keep[k] if k in keep else torch.ones_like(p, dtype=torch.bool) for k, p in net.named_parameters()}
    salient = {k: m.bool() for k, m in module.saliency.items()}
    n_movable = sum(int(m.sum()) for m in movable.values())
    assert sum(int(s.sum()) for s in salient.values()) == round(0.5 * n_movable)
    assert not any((salient[k] & ~movable[k]).any() for k in movable)  # pruned: never salient
    # the most salient ones: every salient |gradient| >= every other movable one
    g = forget_grads(net, digits, task.forget)
    picked = torch.cat([g[k][salient[k]] for k in g])
    rest = torch.cat([g[k][movable[k] & ~salient[k]] for k in g])
    assert picked.min() >= rest.max()
    if sparsity == 0.95:  # the case: not (almost) every kept prunable weight salient
        kept = sum(int(m.sum()) for m in keep.values())
        assert sum(int(salient[k].sum()) for k in keep) < 0.9 * kept


def test_salun_keeps_its_mask_across_a_resume(digits, tmp_path):
    """Stopped after epoch 1 and resumed: the mask of the uninterrupted run, and its weights."""
    def run(epochs: int, ckpt=None, callbacks=()):
        net, task = net_and_task(digits, 0.9)
        module = SalUn(net, task, **{**LOOP, "epochs": 3, "lr": 0.1}, ratio=0.3)
        trainer(epochs, [MaskEnforcer(task.mask), *callbacks]).fit(module, ckpt_path=ckpt, weights_only=True)
        return module

    whole = run(3)
    run(1, callbacks=[last_checkpoint(tmp_path, 1)])
    resumed = run(3, ckpt=tmp_path / "last.ckpt")
    assert all(torch.equal(whole.saliency[k], resumed.saliency[k]) for k in whole.saliency)
    assert all(torch.equal(a, b) for a, b in zip(whole.net.state_dict().values(), resumed.net.state_dict().values(),
                                                 strict=True))
