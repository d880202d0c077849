"""N:M semi-structured masks: exactly n kept of every m consecutive input channels, the largest."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_mu import pipeline
from sparse_mu.errors import ConfigError
from sparse_mu.pruning import BaseWeights, NMPruner
from sparse_mu.pruning.n_m import n_m_mask


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 16),
                         nn.Linear(16, 10))


def test_every_group_keeps_its_n_largest_weights():
    model = net()
    mask, dense = n_m_mask(model, 2, 4)
    assert dense == ["0.weight"]  # 3 input channels: no whole groups of 4
    assert mask.tensors["0.weight"].all()
    conv, keep = model[1].weight.detach(), mask.tensors["1.weight"]
    for o in range(8):
        for i in range(3):
            for j in range(3):
                for g in range(0, 8, 4):  # groups of consecutive input channels
                    w, k = conv[o, g:g + 4, i, j].abs(), keep[o, g:g + 4, i, j]
                    assert int(k.sum()) == 2
                    assert w[k].min() >= w[~k].max()
    lin, keep = model[3].weight.detach().abs(), mask.tensors["3.weight"]
    groups, kept = lin.view(16, -1, 4), keep.view(16, -1, 4)
    assert (kept.sum(-1) == 2).all()
    smallest_kept = torch.where(kept, groups, torch.inf).amin(-1)
    largest_pruned = torch.where(kept, -torch.inf, groups).amax(-1)
    assert (smallest_kept >= largest_pruned).all()
    assert "4.weight" not in mask.tensors  # the head is not prunable


@pytest.mark.parametrize("n, m", [(1, 4), (2, 4), (4, 8)])
def test_sparsity_is_one_minus_n_over_m_on_compatible_layers(n, m):
    mask, _ = n_m_mask(net(), n, m)
    keep = mask.tensors["1.weight"]
    assert keep.float().mean().item() == pytest.approx(n / m)
    assert NMPruner(n=n, m=m).sparsity == pytest.approx(1 - n / m)


def test_the_pruner_scores_the_trained_weights_and_rewinds():
    model = net()
    trained = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    rewind = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    seen = {}

    def train(start, mask):
        seen["start"], seen["mask"] = start, mask
        return start

    _, mask = NMPruner().prune(model, BaseWeights(rewind, rewind, trained), train)
    model.load_state_dict(trained)
    assert torch.equal(mask.tensors["1.weight"], n_m_mask(model, 2, 4)[0].tensors["1.weight"])
    assert seen["start"] is rewind and seen["mask"] is mask  # retrained under the mask it returns
    NMPruner(rewind="none").prune(model, BaseWeights(rewind, rewind, trained), train)
    assert seen["start"] is trained
    assert (NMPruner(n=1, m=2).n, NMPruner(n=1, m=2).m) == (1, 2)  # the smallest pattern is allowed


@pytest.mark.parametrize("kwargs, key", [({"n": 4, "m": 4}, "pruner.n"), ({"m": 1}, "pruner.m"),
                                         ({"sparsity": 0.9}, "pruner.sparsity")])
def test_bad_settings(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        NMPruner(**kwargs)


def test_n_m_end_to_end(tiny_cfg, tmp_path):
    m = pipeline.run(tiny_cfg("pruner=n_m", "arch.width=8", "trainer.limit_train_batches=2", "reference.epochs=2",
                              "unlearner.epochs=1"), tmp_path / "run")
    assert m["target_sparsity"] == pytest.approx(50.0)
    assert 0 < m["sparsity"] <= 50.0  # the first conv (1 input channel) stays dense
