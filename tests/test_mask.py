"""Masks are exact, validated, and held through training with weight decay and momentum."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from sparse_mu.callbacks import MaskEnforcer
from sparse_mu.data import ClassForget, Digits, prepare
from sparse_mu.errors import ConfigError
from sparse_mu.fast import prepare_net
from sparse_mu.models import SmallCNN, resnet20s
from sparse_mu.pruning import OMP, BaseWeights, Dense, Mask, prunable_weights, weight_sparsity
from sparse_mu.pruning.pruners import magnitude_scores
from sparse_mu.unlearn import FineTune, UnlearnTask


def test_prunable_excludes_head_bn_and_bias():
    net = resnet20s(num_classes=10, in_channels=3, image_size=32)
    names = set(prunable_weights(net))
    assert "linear.weight" not in names and "conv1.weight" in names
    assert all(n.endswith(".weight") for n in names)
    assert not any("bn" in n for n in names)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95, 0.999])
def test_global_magnitude_exact_count(sparsity):
    net = resnet20s(num_classes=10, in_channels=3, image_size=32)
    mask = Mask.from_scores(magnitude_scores(net), sparsity)
    assert mask.numel - mask.kept == round(sparsity * mask.numel)
    kept_min = min(w[m].abs().min() for w, m in zip(prunable_weights(net).values(), mask.tensors.values(), strict=True) if m.any())
    pruned_max = max((w[~m].abs().max() for w, m in zip(prunable_weights(net).values(), mask.tensors.values(), strict=True) if (~m).any()), default=-1)
    assert pruned_max <= kept_min


def test_layerwise_prunes_every_layer_equally():
    net = resnet20s(num_classes=10, in_channels=3, image_size=32)
    mask = Mask.from_scores(magnitude_scores(net), 0.8, layerwise=True)
    for row in mask.layer_report().values():
        assert row["sparsity"] == pytest.approx(0.8, abs=1.0 / row["numel"] + 1e-9)


def test_mask_validation_and_storage(tmp_path):
    net = SmallCNN(10, 1, 8)
    mask = Mask.ones(net)
    mask.validate(net)
    with pytest.raises(ConfigError, match="keys the model lacks"):
        Mask({"nope.weight": torch.ones(3)}).validate(net)
    with pytest.raises(ConfigError, match="shapes"):
        Mask({"fc.weight": torch.ones(3)}).validate(net)
    mask.save(tmp_path / "m.pt")
    again = Mask.load(tmp_path / "m.pt")
    assert all(torch.equal(mask.tensors[k], again.tensors[k]) for k in mask.tensors)


def test_pruner_settings():
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="pruner.sparsity"):
            OMP(sparsity=bad)
    with pytest.raises(ConfigError, match="pruner.sparsity"):
        Dense(sparsity=0.5)
    with pytest.raises(ConfigError, match="pruner.rewind"):
        OMP(rewind="later")


@pytest.mark.parametrize("channels_last", [False, True])
def test_pruned_weights_stay_zero_through_ft_with_weight_decay_and_momentum(channels_last):
    data = prepare(Digits())
    torch.manual_seed(0)
    net = prepare_net(SmallCNN(10, 1, 8), channels_last)
    state = net.state_dict()
    mask = Mask.from_scores(magnitude_scores(net), 0.9)
    task = UnlearnTask(data, ClassForget(0).select(data), mask, BaseWeights(state, state, state))
    module = FineTune(net, task, epochs=2, batch_size=64, lr=0.1, momentum=0.9, weight_decay=0.05)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[MaskEnforcer(mask)], limit_train_batches=5)
    before = {k: v.clone() for k, v in prunable_weights(net).items()}
    trainer.fit(module)
    for k, w in prunable_weights(net).items():
        m = mask.tensors[k]
        assert (w[~m] == 0).all(), k  # exactly zero, not small
        assert not torch.equal(w[m], before[k][m] * 1), k  # and the kept weights did train
        state = trainer.optimizers[0].state[w]
        assert (state["momentum_buffer"][~m] == 0).all()
    assert weight_sparsity(net) == pytest.approx(mask.sparsity, abs=1e-12)


def test_prunable_weights_of_attention_and_with_the_head():
    """MultiheadAttention's projections are Linear weights in all but name: the fused
    `in_proj_weight`, or q/k/v_proj_weight when keys and values have other sizes; its
    `out_proj` is a Linear. The head (the last Linear) only with include_head=True."""
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fused = torch.nn.MultiheadAttention(8, 2)
            self.split = torch.nn.MultiheadAttention(8, 2, kdim=4, vdim=6)
            self.norm = torch.nn.LayerNorm(8)
            self.head = torch.nn.Linear(8, 3)

    net = Block()
    attention = {"fused.in_proj_weight", "fused.out_proj.weight", "split.q_proj_weight", "split.k_proj_weight",
                 "split.v_proj_weight", "split.out_proj.weight"}
    assert set(prunable_weights(net)) == attention
    assert set(prunable_weights(net, include_head=True)) == attention | {"head.weight"}
    assert prunable_weights(net)["split.k_proj_weight"] is net.split.k_proj_weight
    assert prunable_weights(net, include_head=True)["head.weight"] is net.head.weight
