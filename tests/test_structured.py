"""Structured (filter) pruning: the lowest-L1 filters go, whole channels output zero, the channel
count and the FLOPs are exact, and the channels stay removed through unlearning and un-pruning."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparse_mu import pipeline
from sparse_mu.data import ClassForget, Digits, prepare
from sparse_mu.errors import ConfigError
from sparse_mu.models.resnet import BasicBlock
from sparse_mu.pruning import BaseWeights, FilterL1
from sparse_mu.pruning.structured import (
    channel_groups,
    channel_mask,
    channel_sparsity,
    flops,
    flops_report,
    select,
    shrunk,
)
from sparse_mu.report.console import run_table
from sparse_mu.unlearn import UnlearnTask
from tests.test_unlearners import MASK_TESTED, fit, make_net

SHAPE = (2, 8, 8)
_DATA = {}


def _digits():
    if "digits" not in _DATA:
        _DATA["digits"] = prepare(Digits())
    return _DATA["digits"]
# |w| of every weight of each filter: the L1 order is the order of these values
FIRST = [0.3, -0.01, 0.02, 0.025]  # conv "0": 2 -> 4, filters of 2 * 3 * 3 weights
SECOND = [1.0, 0.05, -0.7, 0.03, 0.04, 0.9]  # conv "3": 4 -> 6, filters of 4 * 3 * 3 weights


def tiny() -> nn.Module:
    """conv(2->4, 3x3, bias) - BN - ReLU - conv(4->6, 3x3) - BN - ReLU - pool - head(6->3)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, bias=False),
                        nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    with torch.no_grad():
        for conv, values in ((net[0], FIRST), (net[3], SECOND)):
            signs = torch.randint(0, 2, conv.weight.shape) * 2 - 1.0  # the sign does not count
            conv.weight.copy_(signs * torch.tensor(values).abs().view(-1, 1, 1, 1))
        for bn in (net[1], net[4]):  # BN that would turn a zero conv output into a constant
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(0.5, 1.0)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    net.input_shape = SHAPE
    return net


def _removed(net: nn.Module, layerwise: bool, sparsity: float) -> dict[str, list[int]]:
    groups = channel_groups(net, SHAPE)
    return {g.root: r.tolist() for g, r in zip(groups, select(net, groups, sparsity, layerwise), strict=True)}


def test_layerwise_removes_the_lowest_l1_filters_of_every_layer():
    # conv 0: L1 = 18 |v| -> 0.01, 0.02 lowest; conv 3: L1 = 36 |v| -> 0.03, 0.04, 0.05 lowest
    assert _removed(tiny(), True, 0.5) == {"0": [1, 2], "3": [1, 3, 4]}


def test_global_ranks_all_filters_by_mean_magnitude_and_keeps_a_channel_per_layer():
    # the five smallest |v| over both layers: 0.01, 0.02, 0.025 (conv 0), 0.03, 0.04 (conv 3)
    assert _removed(tiny(), False, 0.5) == {"0": [1, 2, 3], "3": [3, 4]}
    # 9 of 10 asked for: each layer keeps its largest filter, so 3 + 5 go
    assert _removed(tiny(), False, 0.9) == {"0": [1, 2, 3], "3": [1, 2, 3, 4, 5]}


def _pruned(layerwise: bool = True) -> tuple[nn.Module, object]:
    net = tiny()
    groups = channel_groups(net, SHAPE)
    mask = channel_mask(net, groups, select(net, groups, 0.5, layerwise))
    return mask.apply_(net), mask


def test_the_mask_zeroes_filter_bias_and_batchnorm_and_never_the_head():
    net, mask = _pruned()
    gone = {"0": [1, 2], "3": [1, 3, 4]}
    assert set(mask.tensors) == {"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "4.weight", "4.bias"}
    for conv, bn in (("0", "1"), ("3", "4")):
        w = net.get_parameter(f"{conv}.weight").detach()
        zero_rows = [o for o in range(w.shape[0]) if (w[o] == 0).all()]
        assert zero_rows == gone[conv]  # counted from the weights
        assert (w[[o for o in range(w.shape[0]) if o not in gone[conv]]] != 0).all()
        for p in (f"{bn}.weight", f"{bn}.bias"):
            v = net.get_parameter(p).detach()
            assert (v[gone[conv]] == 0).all() and (v[[o for o in range(len(v)) if o not in gone[conv]]] != 0).all()
    assert (net[0].bias[gone["0"]] == 0).all()
    assert channel_sparsity(net) == pytest.approx(5 / 10)
    assert mask.tensors["0.weight"].shape == (4, 2, 3, 3)  # whole rows: in the mask, not reshaped


@pytest.mark.parametrize("train_mode", [False, True])
def test_pruned_channels_output_exactly_zero(train_mode):
    net, _ = _pruned()
    net.train(train_mode)
    seen = {}
    net[2].register_forward_hook(lambda m, i, o: seen.__setitem__("first", o.detach().clone()))
    net[5].register_forward_hook(lambda m, i, o: seen.__setitem__("second", o.detach().clone()))
    net(torch.randn(16, *SHAPE) * 3)
    assert (seen["first"][:, [1, 2]] == 0).all() and (seen["first"][:, [0, 3]] != 0).any()
    assert (seen["second"][:, [1, 3, 4]] == 0).all()


def test_flops_by_hand_and_the_shrunk_copy_computes_the_same_function():
    net, _ = _pruned()
    # dense: conv 2*4*2*9 MACs at 6x6, conv 4*6*9 at 4x4, head 6*3; 2 FLOPs per multiply-add
    dense = 2 * (4 * 2 * 9 * 36 + 6 * 4 * 9 * 16 + 6 * 3)
    assert flops(tiny(), SHAPE) == dense == 12132
    # 2 of 4 and 3 of 6 channels left; the next layers lose the matching inputs
    assert flops(shrunk(net, SHAPE), SHAPE) == 2 * (2 * 2 * 9 * 36 + 3 * 2 * 9 * 16 + 3 * 3) == 4338
    small = shrunk(net, SHAPE)
    assert small[0].out_channels == 2 and small[3].in_channels == 2 and small[8].in_features == 3
    net.eval()
    x = torch.randn(8, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(small(x), net(x), atol=1e-6)
    assert flops(shrunk(tiny(), SHAPE), SHAPE) == dense  # nothing dead: nothing removed
    with torch.no_grad():  # the graph is traced with autograd: callers under no_grad work too
        assert flops(shrunk(net, SHAPE), SHAPE) == 4338


def test_flops_report_fields_by_hand():
    # the numbers of test_flops_by_hand_...: 12132 dense FLOPs, 4338 with 2 of 4 and 3 of 6 channels
    assert flops_report(tiny(), SHAPE) == {"flops": 12132, "flops_dense": 12132, "flops_percent": 100.0,
                                           "channel_sparsity": 0.0}
    net, _ = _pruned()
    report = flops_report(net, SHAPE)
    assert report == {"flops": 4338, "flops_dense": 12132, "flops_percent": pytest.approx(100 * 4338 / 12132),
                      "channel_sparsity": pytest.approx(50.0)}
    assert report["flops_percent"] == pytest.approx(35.756676, abs=1e-6)
    # a dead channel where filter pruning does not apply (LayerNorm): the dense FLOPs, yet the
    # zero row counts in the channel sparsity (1 of the 4 rows of the only non-head weight)
    torch.manual_seed(0)
    ln = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        ln[0].weight[1] = 0
        ln[0].bias[1] = 0
    assert flops_report(ln, (4,)) == {"flops": 2 * (4 * 4 + 4 * 2), "flops_dense": 48, "flops_percent": 100.0,
                                      "channel_sparsity": 25.0}
    # no matrix products at all: 0 of 0 FLOPs is reported as 100 %
    assert flops_report(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), SHAPE) == {
        "flops": 0, "flops_dense": 0, "flops_percent": 100.0, "channel_sparsity": 0.0}


PLANES = 6


def block_net() -> nn.Module:
    """The project's ResNet BasicBlock (2 -> 6, stride 2: a 1x1 conv + BN shortcut) - pool - head."""
    torch.manual_seed(0)
    net = nn.Sequential(BasicBlock(2, PLANES, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(PLANES, 3))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # BN that would turn a zero conv output into a constant
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.5, 1.0)
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    net.input_shape = SHAPE
    return net


def test_a_residual_addition_couples_the_shortcut_and_the_second_conv():
    """conv2 - bn2 and the shortcut's conv - BN add up: their output channels are one group, and
    removing a channel zeroes it in all four, so the block's output channel is exactly zero."""
    net = block_net()
    groups = {g.root: g for g in channel_groups(net, SHAPE)}
    assert {r: ({e.name for e in g.filters}, {e.name for e in g.extras}) for r, g in groups.items()} == {
        "0.shortcut.0": ({"0.shortcut.0.weight", "0.conv2.weight"},
                         {"0.shortcut.1.weight", "0.shortcut.1.bias", "0.bn2.weight", "0.bn2.bias"}),
        "0.conv1": ({"0.conv1.weight"}, {"0.bn1.weight", "0.bn1.bias"}),
    }
    out = groups["0.shortcut.0"]
    assert out.size == PLANES
    for e in (*out.filters, *out.extras):
        assert e.root.tolist() == e.index.tolist() == list(range(PLANES)), e.name  # channel c is c everywhere
    # the group's L1 score is the sum over both convs: rank by hand
    l1 = sum(net.get_parameter(k).detach().abs().flatten(1).sum(1).double() for k in ("0.shortcut.0.weight",
                                                                                      "0.conv2.weight"))
    gone = sorted(torch.argsort(l1, stable=True)[: PLANES // 2].tolist())
    order = list(groups)
    removed = select(net, list(groups.values()), 0.5, True)
    assert removed[order.index("0.shortcut.0")].tolist() == gone
    mask = channel_mask(net, list(groups.values()), removed)
    mask.apply_(net)
    kept = [c for c in range(PLANES) if c not in gone]
    for k in ("0.shortcut.0.weight", "0.conv2.weight", "0.shortcut.1.weight", "0.shortcut.1.bias",
              "0.bn2.weight", "0.bn2.bias"):
        v = net.get_parameter(k).detach()
        assert (v[gone] == 0).all() and (v[kept] != 0).reshape(len(kept), -1).any(1).all(), k
    seen = {}
    net[0].register_forward_hook(lambda m, i, o: seen.__setitem__("out", o.detach().clone()))
    for train_mode in (False, True):
        net.train(train_mode)
        net(torch.randn(16, *SHAPE) * 3)
        assert (seen["out"][:, gone] == 0).all() and (seen["out"][:, kept] != 0).any()
    net.eval()
    small = shrunk(net, SHAPE)
    assert small[0].conv2.out_channels == small[0].shortcut[0].out_channels == PLANES - len(gone)
    assert small[3].in_features == PLANES - len(gone)
    x = torch.randn(8, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(small(x), net(x), atol=1e-5)


def test_unstructured_zeros_do_not_count_as_removed_channels():
    net = tiny()
    with torch.no_grad():
        net[0].weight[1] = 0  # a zero filter, but its BN still adds a constant: not dead
    assert flops(shrunk(net, SHAPE), SHAPE) == flops(tiny(), SHAPE)
    assert channel_sparsity(net) == pytest.approx(1 / 10)


@pytest.mark.parametrize("rewind", ["epoch", "init", "none"])
def test_the_pruner_scores_the_trained_weights_and_rewinds(rewind):
    """The mask comes from the trained weights; the retraining starts from the rewind-epoch
    weights, the initialisation, or (rewind none) the trained weights themselves."""
    trained = tiny().state_dict()
    init, epoch = ({k: torch.randn_like(v) if v.is_floating_point() else v for k, v in trained.items()}
                   for _ in range(2))
    seen = {}

    def train(start, mask):
        seen["start"], seen["mask"] = start, mask
        return start

    scratch = copy.deepcopy(tiny())
    with torch.no_grad():
        for p in scratch.parameters():
            p.normal_()  # the scratch net's own weights must not be what is scored
    out, mask = FilterL1(sparsity=0.5, rewind=rewind).prune(scratch, BaseWeights(init, epoch, trained), train)
    assert seen["start"] is {"epoch": epoch, "init": init, "none": trained}[rewind]
    assert seen["mask"] is mask and out is seen["start"]
    assert torch.equal(mask.tensors["0.weight"], _pruned()[1].tensors["0.weight"])


@pytest.mark.parametrize("kwargs, key", [({"sparsity": 1.0}, "pruner.sparsity"), ({"rewind": "later"}, "pruner.rewind")])
def test_bad_settings(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        FilterL1(**kwargs)


def test_unsupported_architectures_are_refused():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    net.input_shape = (4,)
    with pytest.raises(ConfigError, match=r"^arch must be a network of convolutions.*got '1 \(LayerNorm\)'$"):
        FilterL1().validate(net)


def test_filter_pruning_end_to_end_with_unlearning_and_unpruning(tiny_cfg, tmp_path):
    common = ("pruner=filter_l1", "arch.width=8", "trainer.limit_train_batches=2", "unlearner.epochs=2")
    m = pipeline.run(tiny_cfg(*common), tmp_path / "ft")  # FT: weight decay and momentum on every weight
    # small_cnn width 8 on 8x8 digits: 8, 16, 32 channels, the last two blocks pooled
    dense = 2 * (8 * 1 * 9 * 64 + 16 * 8 * 9 * 64 + 32 * 16 * 9 * 16 + 32 * 10)
    small = 2 * (4 * 1 * 9 * 64 + 8 * 4 * 9 * 64 + 16 * 8 * 9 * 16 + 16 * 10)
    assert m["target_sparsity"] == pytest.approx(50.0)
    assert m["channel_sparsity"] == pytest.approx(50.0)  # the unlearned model's weights
    # the removed channels' BN entries stayed zero too, or they would not count as removed
    assert (m["flops_dense"], m["flops"]) == (dense, small)
    assert m["flops_percent"] == pytest.approx(100 * small / dense)
    assert "FLOPs per image: 0.0787 M of 0.305 M dense (25.8 %), channel sparsity 50.0 %" in run_table(m).caption

    # un-pruning with Retrain: the unlearned dense model is the reference's, so the same channels
    u = pipeline.run(tiny_cfg(*common, "unprune.enabled=true", "unlearner=retrain", "unlearner.epochs=6"),
                     tmp_path / "unprune")
    assert u["mask_IoU"] == u["mask_IoM"] == 100.0
    assert u["unpruned"]["channel_sparsity"] == pytest.approx(50.0)
    assert u["flops"] == small and u["channel_sparsity"] == pytest.approx(50.0)


def test_a_layer_with_every_channel_dead_is_left_whole():
    net = tiny()
    with torch.no_grad():
        for p in (net[0].weight, net[0].bias, net[1].weight, net[1].bias):
            p.zero_()
    assert shrunk(net, SHAPE)[0].out_channels == 4  # no zero-width layer


@pytest.mark.parametrize("name", list(MASK_TESTED))
def test_every_unlearner_keeps_whole_channels_removed(name):
    """A channel mask through every unlearner (weight decay 0.05): filters, BN affine entries
    and with them the channels' outputs stay exactly zero; the model stays as small."""
    data = _digits()
    cls, kwargs = MASK_TESTED[name]
    net = make_net()
    net.input_shape = (1, 8, 8)
    groups = channel_groups(net, net.input_shape)
    mask = channel_mask(net, groups, select(net, groups, 0.5, True))
    mask.apply_(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    task = UnlearnTask(data, ClassForget(0).select(data), mask, BaseWeights(state, state, state))
    before = flops(shrunk(net, net.input_shape), net.input_shape)
    fit(cls(net, task, **kwargs), mask)
    params = dict(net.named_parameters())
    for k, m in mask.tensors.items():
        assert (params[k][~m] == 0).all(), k  # exactly zero, not small
    assert channel_sparsity(net) == pytest.approx(0.5)
    assert flops(shrunk(net, net.input_shape), net.input_shape) == before < flops(net, net.input_shape)
