"""Pruners compute their criterion: SynFlow's scores by hand on a small linear net and its
100-round exponential schedule; OMP scores the trained weights and rewinds; random pruning is
blind to the weights; dense is the base; a published checkpoint imports as weight * mask; the
training augmentation crops and flips images and keeps their labels."""

from __future__ import annotations

import hashlib
import math
import pickle

import pytest
import torch
from torch import nn

from sparse_mu.data import Augment, ImageData
from sparse_mu.errors import ConfigError
from sparse_mu.pruning import (
    IMP,
    OMP,
    BaseWeights,
    Checkpoint,
    Dense,
    Mask,
    Random,
    SynFlow,
    prunable_weights,
)
from sparse_mu.pruning.analysis import iom, iou
from sparse_mu.pruning.mask import layer_sparsity
from sparse_mu.pruning.published import load_published
from sparse_mu.pruning.synflow import synflow_mask
from tests.conftest import compose_cfg


def linear_net(seed: int = 0) -> nn.Module:
    """3 -> 4 -> 4 -> 2 with biases and ReLUs; the last Linear is the (unpruned) head."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def synflow_scores(net: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """|w * dR/dw| by hand: R = 1^T (|W3| h2 + |b3|), h2 = |W2| h1 + |b2|, h1 = |W1| 1 + |b1|,
    with the pruned entries of W1, W2 zero (all-positive, so the ReLUs pass everything)."""
    w1, w2, w3 = (net[i].weight.detach().abs().double() for i in (0, 2, 4))
    b1, b2 = (net[i].bias.detach().abs().double() for i in (0, 2))
    w1, w2 = w1 * mask.tensors["0.weight"], w2 * mask.tensors["2.weight"]
    h1 = w1 @ torch.ones(3, dtype=torch.double) + b1
    down3 = w3.sum(0)  # dR/dh2
    down2 = down3 @ w2  # dR/dh1
    return {"0.weight": w1 * down2[:, None], "2.weight": w2 * torch.outer(down3, h1)}


@pytest.fixture
def recorded(monkeypatch):
    """Every (scores, sparsity) that Mask.from_scores is called with."""
    calls = []
    original = Mask.from_scores.__func__

    def spy(cls, scores, sparsity, layerwise=False):
        calls.append(({k: s.clone() for k, s in scores.items()}, sparsity))
        return original(cls, scores, sparsity, layerwise)

    monkeypatch.setattr(Mask, "from_scores", classmethod(spy))
    return calls


def test_synflow_scores_are_the_hand_computed_synaptic_flow_in_every_round(recorded):
    net, sparsity, rounds = linear_net(), 0.75, 8
    final = synflow_mask(net, (3,), sparsity, iterations=rounds)
    calls = list(recorded)  # the reference below calls Mask.from_scores too
    assert len(calls) == rounds
    mask = Mask.ones(net)
    for i, (scores, s) in enumerate(calls, 1):
        assert s == pytest.approx(1 - (1 - sparsity) ** (i / rounds))  # density (1 - s)^(i / n)
        want = synflow_scores(net, mask)
        for k, m in mask.tensors.items():
            torch.testing.assert_close(scores[k][m], want[k][m], rtol=1e-10, atol=0)
            assert (scores[k][~m] < 0).all(), k  # pruned ones stay pruned
        mask = Mask.from_scores({k: w.masked_fill(~mask.tensors[k], -1) for k, w in want.items()}, s)
    assert all(torch.equal(final.tensors[k], mask.tensors[k]) for k in mask.tensors)
    # the criterion matters here: magnitude pruning keeps another set
    by_magnitude = Mask.from_scores({k: w.detach().abs() for k, w in prunable_weights(net).items()}, sparsity)
    assert any(not torch.equal(final.tensors[k], by_magnitude.tensors[k]) for k in final.tensors)


def test_synflow_prunes_in_100_exponential_rounds_by_default(recorded):
    assert compose_cfg(["pruner=synflow"]).pruner.iterations == 100
    net = linear_net()
    net.input_shape = (3,)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    pruner = SynFlow(sparsity=0.9, device="cpu")
    _, mask = pruner.prune(net, BaseWeights(init, None, None), lambda start, m: start)
    assert [s for _, s in recorded] == pytest.approx([1 - 0.1 ** (i / 100) for i in range(1, 101)])
    assert mask.numel - mask.kept == round(0.9 * mask.numel)


def _states(*seeds):
    return [{k: v.clone() for k, v in linear_net(s).state_dict().items()} for s in seeds]


class Train:
    """A stand-in for the pipeline's train(start, mask): records its calls, returns a new state."""

    def __init__(self):
        self.calls = []

    def __call__(self, start, mask):
        self.calls.append((start, mask))
        return {k: v + 1 for k, v in start.items()}


@pytest.mark.parametrize("rewind, start", [("epoch", 1), ("init", 0), ("none", 2)])
def test_omp_prunes_the_trained_weights_by_magnitude_and_rewinds(rewind, start):
    base = BaseWeights(*_states(10, 11, 12))
    train = Train()
    state, mask = OMP(sparsity=0.5, rewind=rewind).prune(linear_net(), base, train)
    trained = {k: base.final[k].abs() for k in ("0.weight", "2.weight")}
    want = Mask.from_scores(trained, 0.5)
    assert all(torch.equal(mask.tensors[k], want.tensors[k]) for k in want.tensors)
    initial = Mask.from_scores({k: base.init[k].abs() for k in trained}, 0.5)
    assert any(not torch.equal(mask.tensors[k], initial.tensors[k]) for k in trained)  # discriminates
    (started, used), = train.calls
    origin = (base.init, base.rewind, base.final)[start]
    assert all(torch.equal(started[k], origin[k]) for k in origin) and used is mask
    assert all(torch.equal(state[k], origin[k] + 1) for k in origin)  # the retrained weights


def test_random_pruning_ignores_the_weights_and_prunes_exactly():
    masks = []
    for seeds in ((10, 11, 12), (20, 21, 22)):
        train = Train()
        _, mask = Random(sparsity=0.5, seed=3).prune(linear_net(), BaseWeights(*_states(*seeds)), train)
        masks.append(mask)
        assert mask.numel - mask.kept == round(0.5 * mask.numel)
        assert torch.equal(train.calls[0][0]["0.weight"], _states(seeds[1])[0]["0.weight"])  # rewound
    assert all(torch.equal(masks[0].tensors[k], masks[1].tensors[k]) for k in masks[0].tensors)


def test_random_pruning_is_global_and_uniform():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(200, 100), nn.Linear(100, 50), nn.Linear(50, 2))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    _, mask = Random(sparsity=0.8).prune(net, BaseWeights(state, state, state), Train())
    for k, m in mask.tensors.items():  # each layer close to 80 %, though not forced to it
        assert 1 - float(m.float().mean()) == pytest.approx(0.8, abs=0.02), k


def test_dense_is_the_trained_base_without_a_mask():
    base = BaseWeights(*_states(1, 2, 3))
    state, mask = Dense().prune(linear_net(), base, Train())
    assert state is base.final and mask is None


class Headed(nn.Module):
    def __init__(self):
        super().__init__()
        self.features, self.linear = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.linear(self.features(x))


def test_a_published_checkpoint_imports_as_weight_orig_times_mask(tmp_path):
    g = torch.Generator().manual_seed(0)
    orig, keep = torch.randn(3, 4, generator=g), (torch.rand(3, 4, generator=g) > 0.5).float()
    sd = {"module.features.weight_orig": orig, "module.features.weight_mask": keep,
          "module.features.bias": torch.randn(3, generator=g), "module.fc.weight": torch.randn(2, 3, generator=g),
          "module.fc.bias": torch.randn(2, generator=g)}
    torch.save({"state_dict": sd}, tmp_path / "model.pth.tar")
    pruner = Checkpoint(path=str(tmp_path / "model.pth.tar"))
    assert pruner.sparsity == pytest.approx(1 - float(keep.mean()))

    def no_training(start, mask):
        raise AssertionError("an imported checkpoint is not trained")

    state, mask = pruner.prune(Headed(), None, no_training)
    assert torch.equal(state["features.weight"], orig * keep)
    assert torch.equal(mask.tensors["features.weight"], keep.bool()) and set(mask.tensors) == {"features.weight"}
    assert torch.equal(state["linear.weight"], sd["module.fc.weight"])  # the head, renamed
    assert torch.equal(state["features.bias"], sd["module.features.bias"])


def _images(n: int = 64) -> ImageData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)  # no zero pixel
    y = torch.arange(n) % 10
    empty = torch.zeros(0, dtype=torch.long)
    return ImageData("images", x, y, torch.arange(n), empty, empty, [str(c) for c in range(10)],
                     torch.tensor([0.5] * 3), torch.tensor([0.25] * 3), Augment(crop_padding=4, flip=True), "images")


def test_training_batches_are_cropped_and_flipped_evaluation_batches_are_not():
    data = _images()
    assert [compose_cfg([f"dataset={d}"]).dataset.get(k) for d in ("cifar10", "cifar100") for k in ("crop_padding", "flip")] \
        == [4, True, 4, True]
    x_eval, y_eval, idx_eval = next(iter(data.loader(data.train, batch_size=64, train=False)))
    pos = {int(i): j for j, i in enumerate(idx_eval)}
    x, y, idx = next(iter(data.loader(data.train, batch_size=64, train=True, seed=0)))
    zero = -0.5 / 0.25  # a zero-padded pixel after normalisation
    shifted = flipped = 0
    for xi, yi, i in zip(x, y, idx, strict=True):
        ref = x_eval[pos[int(i)]]
        assert yi == y_eval[pos[int(i)]]  # labels travel with their images
        padded = torch.nn.functional.pad(ref, (4, 4, 4, 4), value=zero)
        views = {(dy, dx, f): (padded.flip(2) if f else padded)[:, dy:dy + 8, dx:dx + 8]
                 for dy in range(9) for dx in range(9) for f in (False, True)}
        hits = [key for key, v in views.items() if torch.allclose(v, xi)]
        assert hits, "a training image is not a crop (and flip) of its padded image"
        shifted += hits[0][:2] != (4, 4)
        flipped += hits[0][2]
    assert shifted > 48 and 16 < flipped < 48  # 80/81 of crops move; half the images flip


def test_checkpoint_checks_its_normalisation_against_the_data_set_and_counts_sparsity(tmp_path):
    sd = {"features.weight_orig": torch.ones(3, 4), "features.weight_mask": torch.ones(3, 4),
          "features.bias": torch.zeros(3), "fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2),
          "normalize.mean": torch.tensor([0.5]), "normalize.std": torch.tensor([0.25])}
    path = tmp_path / "norm.pth.tar"
    torch.save(sd, path)
    Checkpoint(path=str(path), mean=[0.5], std=[0.25]).validate(Headed())
    for mean, std, name in (([0.4], [0.25], "mean"), ([0.5], [0.3], "std")):
        with pytest.raises(ConfigError, match=f"{path}.* normalises inputs with {name}"):
            Checkpoint(path=str(path), mean=mean, std=std).validate(Headed())
    torch.save({"fc.weight": torch.ones(2, 3)}, tmp_path / "dense.pth.tar")
    assert Checkpoint(path=str(tmp_path / "dense.pth.tar")).sparsity == 0.0  # no masks: nothing pruned


class _NotATensor:
    pass


def test_a_mask_file_is_loaded_as_tensors_only(tmp_path):
    torch.save({"w": _NotATensor()}, tmp_path / "bad.pt")
    with pytest.raises(pickle.UnpicklingError):
        Mask.load(tmp_path / "bad.pt")


def test_masks_and_sparsity_read_from_the_weights_and_the_checkpoint_hash(tmp_path):
    net = linear_net()
    with torch.no_grad():
        net[0].weight[:2] = 0  # 6 of 12 zero
        net[2].weight[0, 0] = 0  # 1 of 16
    mask = Mask.from_weights(net)
    assert torch.equal(mask.tensors["0.weight"], net[0].weight != 0) and set(mask.tensors) == {"0.weight", "2.weight"}
    assert layer_sparsity(net) == pytest.approx({"0.weight": 50.0, "2.weight": 100 / 16})
    torch.save({"w_mask": torch.ones(2)}, tmp_path / "c.pth.tar")
    digest = hashlib.sha256((tmp_path / "c.pth.tar").read_bytes()).hexdigest()
    assert Checkpoint(path=str(tmp_path / "c.pth.tar")).inputs() == {"checkpoint_sha256": digest}


def test_overlap_of_empty_or_mismatched_masks_and_dense_settings():
    assert math.isnan(iou(Mask({}), Mask({}))["global"]) and math.isnan(iom(Mask({}), Mask({}))["global"])
    with pytest.raises(ConfigError, match=r"mask shapes differ at w: \(4,\) vs \(2,\)"):
        iou(Mask({"w": torch.ones(4)}), Mask({"w": torch.ones(2)}))
    with pytest.raises(ConfigError, match=r"pruner.sparsity must be 0 for pruner=dense \(pick pruner=omp.*got 0.5"):
        Dense(sparsity=0.5)
    base, train = BaseWeights(*_states(10, 11, 12)), Train()
    Random(sparsity=0.5, rewind="none").prune(linear_net(), base, train)
    assert torch.equal(train.calls[0][0]["0.weight"], base.final["0.weight"])  # rewind none: the trained weights


def test_layerwise_omp_and_the_boundaries_of_the_pruner_settings():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 10), nn.Linear(10, 10), nn.Linear(10, 2))
    with torch.no_grad():
        net[0].weight.mul_(100)  # globally, layer 0 would keep everything
    state = {k: v.clone() for k, v in net.state_dict().items()}
    _, mask = OMP(sparsity=0.5, layerwise=True).prune(net, BaseWeights(state, state, state), Train())
    assert [int(m.sum()) for m in mask.tensors.values()] == [100, 50]
    assert IMP(rounds=1, sparsity=None).sparsity == pytest.approx(0.2) and SynFlow(iterations=1).iterations == 1
    for make, message in ((lambda: IMP(rate=1.0), r"pruner.rate must be in \(0, 1\); got 1.0"),
                          (lambda: SynFlow(iterations=0), "pruner.iterations must be an integer >= 1; got 0"),
                          (lambda: IMP(rounds=0, sparsity=None), "pruner.rounds must be an integer >= 1 or null; got 0"),
                          (lambda: SynFlow(device="tpu"), "pruner.device must be one of auto, cpu, cuda; got 'tpu'"),
                          (lambda: IMP(rounds=2), "set exactly one of pruner.sparsity and pruner.rounds.*"
                                                  "For a fixed number of rounds: pruner.rounds=K pruner.sparsity=null")):
        with pytest.raises(ConfigError, match=message):
            make()


def test_published_checkpoints_with_bad_masks_or_duplicated_weights_are_refused(tmp_path):
    base = {"features.weight_orig": torch.ones(3, 4), "features.weight_mask": torch.ones(3, 4),
            "features.bias": torch.zeros(3), "fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}
    cases = [({"features.weight_mask": torch.full((3, 4), 0.5)}, "masks with values other than 0 and 1"),
             ({"features.weight": torch.ones(3, 4)}, "weights stored both plain and as weight_orig"),
             ({"normalize.std": torch.tensor([0.3])}, "normalises inputs with std")]
    for i, (change, message) in enumerate(cases):
        torch.save({**base, **change}, tmp_path / f"{i}.pth.tar")
        with pytest.raises(ConfigError, match=message):
            load_published(tmp_path / f"{i}.pth.tar", Headed(), mean=None, std=[0.25])


def test_published_checkpoints_must_hold_exactly_the_model_keys_as_tensors(tmp_path):
    base = {"features.weight_orig": torch.ones(3, 4), "features.weight_mask": torch.ones(3, 4),
            "features.bias": torch.zeros(3), "fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}
    extra, short = {**base, "extra.bias": torch.zeros(2)}, {k: v for k, v in base.items() if k != "fc.bias"}
    for name, sd, message in (("extra", extra, r"keys the model lacks: \['extra.bias'\]; model keys the checkpoint "
                                              r"lacks: \[\]"),
                              ("short", short, r"keys the model lacks: \[\]; model keys the checkpoint lacks: "
                                               r"\['linear.bias'\]")):
        torch.save({"state_dict": sd}, tmp_path / f"{name}.pth.tar")
        with pytest.raises(ConfigError, match=message):
            load_published(tmp_path / f"{name}.pth.tar", Headed())
    for i, obj in enumerate((torch.ones(3), [torch.ones(3)], {}, {"state_dict": {"w": 1}})):
        torch.save(obj, tmp_path / f"{i}.pt")
        with pytest.raises(ConfigError, match=f"{i}.pt: expected a dict of tensors"):
            load_published(tmp_path / f"{i}.pt", Headed())
    # the normalisation must match the data set's to 1e-4, per channel
    torch.save({**base, "normalize.mean": torch.tensor([0.5, 0.4])}, tmp_path / "n.pth.tar")
    load_published(tmp_path / "n.pth.tar", Headed(), mean=[0.50009, 0.39991])
    for mean in ([0.5002, 0.4], [0.5, 0.4002], [0.5]):
        with pytest.raises(ConfigError, match="normalises inputs with mean"):
            load_published(tmp_path / "n.pth.tar", Headed(), mean=mean)
