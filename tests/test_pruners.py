"""Pruners reach their targets exactly; IMP rewinds every round; SynFlow is data-free; SAM keeps
the mask; published checkpoints round-trip; every pruner and profile runs end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from sparse_mu import pipeline
from sparse_mu.callbacks import MaskEnforcer
from sparse_mu.data import Digits, ImageData, prepare
from sparse_mu.errors import ConfigError
from sparse_mu.models import SmallCNN, resnet18, resnet20s
from sparse_mu.pruning import (
    IMP,
    OMP,
    BaseWeights,
    Checkpoint,
    Mask,
    Random,
    SynFlow,
    classifier_head,
    export,
    export_published,
    iom,
    iou,
    load_published,
    prunable_weights,
    synflow,
)
from sparse_mu.pruning.pruners import magnitude_scores
from sparse_mu.training import Classifier

# A few batches: seconds per run; no Retrain reference (test_pipeline covers it).
FAST = ["train.epochs=2", "train.rewind_epoch=1", "unlearner.epochs=1", "trainer.limit_train_batches=3",
        "eval.retrain_reference=false"]
NARROW = "arch.width=8"  # small_cnn, the default arch


def _nets() -> dict:
    torch.manual_seed(0)
    return {"small_cnn": SmallCNN(10, 1, 8), "resnet20s": resnet20s(10, 3, 8)}


def _perturbed(state: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in state.items()}


def _base(net) -> BaseWeights:
    init = {k: v.clone() for k, v in net.state_dict().items()}
    return BaseWeights(init, _perturbed(init, 1), _perturbed(init, 2))


class FakeTrain:
    """A stand-in for the pipeline's `train(start, mask)`: records calls, returns moved weights."""

    def __init__(self):
        self.calls: list[tuple[dict, Mask]] = []
        self.outputs: list[dict] = []

    def __call__(self, start, mask):
        self.calls.append((start, mask))
        out = _perturbed(start, 100 + len(self.calls))
        for k, m in mask.tensors.items():
            out[k] = out[k] * m
        self.outputs.append(out)
        return out


def _prunable_count(net) -> int:
    return sum(w.numel() for w in prunable_weights(net).values())


PRUNERS = {
    "omp": lambda: OMP(sparsity=0.95),
    "imp": lambda: IMP(sparsity=0.95),
    "random": lambda: Random(sparsity=0.95),
    "synflow": lambda: SynFlow(sparsity=0.95, iterations=5),
}


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20s"])
@pytest.mark.parametrize("name", list(PRUNERS))
def test_each_pruner_reaches_its_target(name, arch):
    net = _nets()[arch]
    net.input_shape = (1, 8, 8) if arch == "small_cnn" else (3, 8, 8)
    pruner, train = PRUNERS[name](), FakeTrain()
    state, mask = pruner.prune(net, _base(net), train)
    assert abs(mask.sparsity - 0.95) <= 0.001
    assert mask.numel - mask.kept == round(0.95 * _prunable_count(net))
    for k, m in mask.tensors.items():
        assert (state[k][~m] == 0).all()
    assert len(train.calls) == (14 if name == "imp" else 1)


def test_imp_rounds_rate_and_sparsity_rule():
    assert IMP(sparsity=0.95).rounds == 14  # 0.8^13 = 5.5 % > 5 % >= 0.8^14
    assert IMP(sparsity=0.95).targets()[-1] == 0.95  # the last round stops at the target
    assert IMP(rounds=5, sparsity=None).sparsity == pytest.approx(1 - 0.8**5)
    assert IMP(sparsity=1 - 0.8**5).rounds == 5
    assert IMP(sparsity=0.5, rate=0.5).targets() == [0.5]
    assert IMP(rounds=3, sparsity=None, rate=0.5).targets() == [0.5, 0.75, 0.875]


def test_imp_prunes_the_remaining_weights_and_rewinds_every_round():
    net = resnet20s(10, 3, 8)
    base, train = _base(net), FakeTrain()
    state, mask = IMP(rounds=4, sparsity=None).prune(net, base, train)
    assert len(train.calls) == 4
    n = _prunable_count(net)
    for k, (start, m) in enumerate(train.calls, 1):
        assert all(torch.equal(start[p], base.rewind[p]) for p in start)  # rewound each round
        assert m.kept == round(0.8**k * n)  # density 0.8^k
        if k > 1:
            before = train.calls[k - 2][1]
            assert all((m.tensors[p] <= before.tensors[p]).all() for p in m.tensors)  # pruned stay pruned
            # the round pruned the smallest of the weights the last round kept and trained
            net.load_state_dict(train.outputs[k - 2])
            scores = torch.cat([s.flatten() for s in magnitude_scores(net, before).values()])
            keep = torch.cat([t.flatten() for t in m.tensors.values()])
            newly = torch.cat([t.flatten() for t in before.tensors.values()]) & ~keep
            assert scores[newly].max() <= scores[keep].min()
    assert mask.sparsity == pytest.approx(1 - 0.8**4, abs=1 / n)
    assert all(torch.equal(state[k], train.outputs[-1][k]) for k in state)


def test_imp_rewind_none_continues_from_the_last_round():
    net = SmallCNN(10, 1, 8)
    base, train = _base(net), FakeTrain()
    IMP(rounds=2, sparsity=None, rewind="none").prune(net, base, train)
    first_start = train.calls[0][0]
    assert all(torch.equal(first_start[k], base.final[k]) for k in first_start)
    assert not torch.equal(train.calls[1][0]["fc.weight"], base.final["fc.weight"])


def test_random_pruner_is_seeded_and_layerwise():
    net = resnet20s(10, 3, 8)
    masks = [Random(sparsity=0.9, seed=s).prune(net, _base(net), FakeTrain())[1] for s in (0, 0, 1)]
    assert all(torch.equal(masks[0].tensors[k], masks[1].tensors[k]) for k in masks[0].tensors)
    assert not all(torch.equal(masks[0].tensors[k], masks[2].tensors[k]) for k in masks[0].tensors)
    layerwise = Random(sparsity=0.9, layerwise=True).prune(net, _base(net), FakeTrain())[1]
    for row in layerwise.layer_report().values():
        assert row["sparsity"] == pytest.approx(0.9, abs=1 / row["numel"])
    assert Random(rewind="init").needs_trained_base is False and Random().needs_trained_base is True


def test_synflow_is_deterministic_and_follows_the_init():
    def mask_of(seed):
        torch.manual_seed(seed)
        net = SmallCNN(10, 1, 8)
        return synflow.synflow_mask(net, (1, 8, 8), 0.9, iterations=10)

    a, b, c = mask_of(0), mask_of(0), mask_of(1)
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert iou(a, c)["global"] < 1
    assert a.sparsity == pytest.approx(0.9, abs=1e-3)


def test_synflow_leaves_the_net_untouched():
    net = SmallCNN(10, 1, 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    synflow.synflow_mask(net, (1, 8, 8), 0.5, iterations=3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # signs restored


@pytest.mark.parametrize(("make", "key"), [
    (lambda: OMP(sparsity=1.0), "pruner.sparsity"),
    (lambda: IMP(sparsity=1.0), "pruner.sparsity"),
    (lambda: Random(sparsity=1.0), "pruner.sparsity"),
    (lambda: SynFlow(sparsity=1.0), "pruner.sparsity"),
    (lambda: IMP(rate=1.2), r"pruner.rate must be in \(0, 1\); got 1.2"),
    (lambda: IMP(rate=0.0), "pruner.rate"),
    (lambda: IMP(rounds=3), "set exactly one of pruner.sparsity and pruner.rounds"),
    (lambda: IMP(rounds=0, sparsity=None), "pruner.rounds"),
    (lambda: SynFlow(iterations=0), "pruner.iterations"),
    (lambda: Checkpoint(path="nowhere.pth.tar"), "pruner.path must name an existing checkpoint file"),
])
def test_bad_pruner_settings(make, key):
    with pytest.raises(ConfigError, match=key):
        make()


def test_sam_keeps_the_mask_and_evaluates_twice_per_step():
    data = prepare(Digits())
    torch.manual_seed(0)
    net = SmallCNN(10, 1, 8, width=8)
    mask = Mask.from_scores(magnitude_scores(net), 0.8)
    steps = []

    class Counting(Classifier):
        def training_step(self, batch, batch_idx):
            steps.append(batch_idx)
            return super().training_step(batch, batch_idx)

    module = Counting(net, data, data.train, epochs=1, batch_size=64, lr=0.1, weight_decay=0.05,
                      optimizer="sam", rho=2.0, adaptive=True, rewind_epoch=0)
    before = {k: v.clone() for k, v in prunable_weights(net).items()}
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[MaskEnforcer(mask)], limit_train_batches=3)
    trainer.fit(module)
    assert len(steps) == 6  # the closure runs at w and at w + e(w)
    for k, w in prunable_weights(net).items():
        m = mask.tensors[k]
        assert (w[~m] == 0).all(), k
        assert not torch.equal(w[m], before[k][m]), k
        assert (trainer.optimizers[0].state[w]["momentum_buffer"][~m] == 0).all()


# -- published checkpoints -------------------------------------------------------------------

def _pruned(net, sparsity=0.7):
    torch.manual_seed(1)
    mask = Mask.from_scores({k: torch.rand(w.shape) for k, w in prunable_weights(net).items()}, sparsity)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for k, m in mask.tensors.items():
        state[k] = state[k] * m
    return state, mask


@pytest.mark.parametrize(("make", "renamed"), [
    (lambda: resnet20s(10, 3, 32), ("fc.weight", "linear.weight")),  # the published head name
    (lambda: resnet18(10, 3, 32, width=8), ("layer2.0.downsample.0.weight_orig", "layer2.0.shortcut.0.weight")),
])
def test_published_roundtrip(make, renamed, tmp_path):
    net = make()
    state, mask = _pruned(net)
    path = tmp_path / "model_SA_best.pth.tar"
    export_published(state, mask, path, head=classifier_head(net))
    raw = torch.load(path, weights_only=True)["state_dict"]
    assert renamed[0] in raw and "conv1.weight_orig" in raw and "conv1.weight_mask" in raw
    assert "conv1.weight" not in raw
    state2, mask2 = load_published(path, make())
    assert state2.keys() == state.keys() and all(torch.equal(state[k], state2[k]) for k in state)
    assert mask2.tensors.keys() == mask.tensors.keys()
    assert all(torch.equal(mask.tensors[k], mask2.tensors[k]) for k in mask.tensors)


def test_published_dataparallel_prefix_and_normalize(tmp_path):
    net = resnet20s(10, 3, 32)
    state, mask = _pruned(net)
    export_published(state, mask, tmp_path / "a.pt", head="linear")
    sd = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    sd = {f"module.{k}": v for k, v in sd.items()}
    sd["module.normalize.mean"] = torch.tensor([0.4914, 0.4822, 0.4465])
    sd["module.normalize.std"] = torch.tensor([0.2470, 0.2435, 0.2616])
    torch.save({"state_dict": sd, "epoch": 182, "best_sa": 94.1}, tmp_path / "b.pth.tar")
    loaded, _ = load_published(tmp_path / "b.pth.tar", net, mean=[0.4914, 0.4822, 0.4465])
    assert torch.equal(loaded["linear.weight"], state["linear.weight"])
    with pytest.raises(ConfigError, match="dataset.mean"):
        load_published(tmp_path / "b.pth.tar", net, mean=[0.5, 0.5, 0.5])


def test_published_errors(tmp_path):
    net = resnet20s(10, 3, 32)
    state, mask = _pruned(net)
    path = tmp_path / "m.pth.tar"
    export_published(state, mask, path, head="linear")
    sd = torch.load(path, weights_only=True)["state_dict"]
    del sd["layer1.0.conv1.weight_mask"]
    torch.save({"state_dict": sd}, tmp_path / "no_mask.pth.tar")
    with pytest.raises(ConfigError, match=r"no_mask.pth.tar: missing mask keys for \['layer1.0.conv1.weight_mask'\]"):
        load_published(tmp_path / "no_mask.pth.tar", net)
    with pytest.raises(ConfigError, match="does not fit this architecture"):
        load_published(path, SmallCNN(10, 3, 32))
    with pytest.raises(ConfigError, match="shapes"):
        load_published(path, resnet20s(100, 3, 32))
    torch.save({"state_dict": {k: v for k, v in sd.items() if not k.endswith("_mask")}}, tmp_path / "dense.pt")
    with pytest.raises(ConfigError, match="no pruning masks"):
        load_published(tmp_path / "dense.pt", net)
    torch.save({"state_dict": sd, "args": Path("x")}, tmp_path / "objects.pt")
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_published(tmp_path / "objects.pt", net)


def test_export_cli(tmp_path):
    net = SmallCNN(10, 1, 8, width=8)
    state, mask = _pruned(net)
    art = tmp_path / "prune" / "abc"
    art.mkdir(parents=True)
    torch.save(state, art / "model.pt")
    mask.save(art / "mask.pt")
    (art / "meta.json").write_text(json.dumps({"head": "fc"}))
    export.main([str(art), str(tmp_path / "out.pth.tar")])
    state2, mask2 = load_published(tmp_path / "out.pth.tar", SmallCNN(10, 1, 8, width=8))
    assert all(torch.equal(state[k], state2[k]) for k in state)
    assert mask2.sparsity == pytest.approx(mask.sparsity)


def test_iou_and_iom():
    a = Mask({"w": torch.tensor([1, 1, 1, 0]), "v": torch.tensor([1, 0])})
    b = Mask({"w": torch.tensor([1, 0, 0, 0]), "v": torch.tensor([1, 1])})
    assert iou(a, b) == {"global": 2 / 5, "layers": {"w": 1 / 3, "v": 1 / 2}}
    assert iom(a, b) == {"global": 2 / 3, "layers": {"w": 1.0, "v": 1.0}}
    assert iou(a, a)["global"] == 1.0
    assert math.isnan(iou(Mask({"w": torch.zeros(2)}), Mask({"w": torch.zeros(2)}))["global"])
    with pytest.raises(ConfigError, match="different weights"):
        iou(a, Mask({"w": torch.ones(4)}))


# -- end to end -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the end-to-end pruner runs: the dense base model is trained once."""
    return tmp_path_factory.mktemp("cache")


def _fit_spy(monkeypatch) -> list[str]:
    stages = []
    fit = pipeline.Job.fit
    monkeypatch.setattr(pipeline.Job, "fit", lambda self, module, stage, *a: stages.append(stage) or fit(self, module, stage, *a))
    return stages


def _artifact(cache: Path, stage: str, key: str) -> tuple[dict, Mask | None, dict]:
    art = cache / stage / key
    meta = json.loads((art / "meta.json").read_text())
    if stage != "prune":
        return {}, None, meta
    return torch.load(art / "model.pt", weights_only=True), Mask.load(art / "mask.pt"), meta


@pytest.mark.parametrize(("overrides", "target", "trains_base"), [
    (["pruner=imp", "pruner.rounds=2", "pruner.sparsity=null"], 1 - 0.8**2, True),
    (["pruner=random", "pruner.sparsity=0.8"], 0.8, True),
    (["pruner=synflow", "pruner.sparsity=0.8", "pruner.iterations=10"], 0.8, False),
])
def test_pruner_end_to_end(overrides, target, trains_base, tiny_cfg, shared_cache, tmp_path):
    m = pipeline.run(tiny_cfg(*FAST, NARROW, *overrides, f"paths.cache_dir={shared_cache}"), tmp_path / "run")
    assert abs(m["sparsity"] / 100 - target) <= 0.001 and m["target_sparsity"] == pytest.approx(100 * target)
    state, mask, meta = _artifact(shared_cache, "prune", m["artifacts"]["pruned"])
    for k, keep in mask.tensors.items():
        assert (state[k][~keep] == 0).all() and (state[k][keep] != 0).all(), k  # exactly zero, and only those
    assert meta["rounds"] == (2 if "pruner=imp" in overrides else 1)
    assert _artifact(shared_cache, "base", m["artifacts"]["base"])[2]["trained"] == trains_base
    assert set(m["layer_sparsity"]) == set(mask.tensors)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["layer_sparsity"] == m["layer_sparsity"]


def test_synflow_touches_no_data(tiny_cfg, tmp_path, monkeypatch):
    """While SynFlow scores, every read of the data set's tensors or loaders raises."""
    scoring = []
    guarded = {"x", "y", "train", "val", "test", "loader", "on"}

    def getattribute(self, name):
        if scoring and name in guarded:
            raise AssertionError(f"SynFlow read data.{name}")
        return object.__getattribute__(self, name)

    def watched(*args, **kwargs):
        scoring.append(True)
        try:
            return score(*args, **kwargs)
        finally:
            scoring.clear()

    score = synflow.synflow_mask
    monkeypatch.setattr(ImageData, "__getattribute__", getattribute)
    monkeypatch.setattr(synflow, "synflow_mask", watched)
    m = pipeline.run(tiny_cfg(*FAST, NARROW, "pruner=synflow", "pruner.iterations=5", "pruner.sparsity=0.5"),
                     tmp_path / "r")
    assert m["sparsity"] == pytest.approx(50, abs=0.1)


def test_checkpoint_pruner_end_to_end(tiny_cfg, tmp_path, monkeypatch):
    torch.manual_seed(3)
    state, mask = _pruned(SmallCNN(10, 1, 8, width=8), sparsity=0.6)
    path = tmp_path / "published.pth.tar"
    export_published(state, mask, path)
    stages = _fit_spy(monkeypatch)
    m = pipeline.run(tiny_cfg(*FAST, NARROW, "pruner=checkpoint", f"pruner.path={path}"), tmp_path / "run")
    assert stages == ["unlearn"]  # no dense model, no retraining: the checkpoint is the pruned model
    saved, saved_mask, _ = _artifact(tmp_path / "cache", "prune", m["artifacts"]["pruned"])
    assert all(torch.equal(saved[k], state[k]) for k in state)
    assert all(torch.equal(saved_mask.tensors[k], mask.tensors[k]) for k in mask.tensors)
    assert m["sparsity"] == pytest.approx(100 * mask.sparsity)


@pytest.mark.parametrize("overrides", [
    ["train=ls", NARROW],
    ["train=sam", NARROW],
    ["train=transformer", "arch=vit", "arch.num_layers=1", "arch.hidden_dim=32", "arch.mlp_dim=64", "arch.num_heads=2"],
])
def test_profile_end_to_end(overrides, tiny_cfg, tmp_path):
    m = pipeline.run(tiny_cfg(*FAST, "pruner=omp", "pruner.sparsity=0.5", *overrides), tmp_path / "run")
    assert m["sparsity"] == pytest.approx(50, abs=0.1)
    assert all(0 <= m[k] <= 100 for k in ("UA", "RA", "TA"))


@pytest.mark.parametrize(("overrides", "message"), [
    (["arch=swin_t"], "arch swin_t .* needs images of at least 16x16"),
    (["arch=vit", "arch.patch_size=3"], "arch.patch_size must divide"),
    (["pruner=synflow", "reference.start=rewind"], "unlearner.start must be init"),
])
def test_bad_combinations_fail_before_training(overrides, message, tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match=message):
        pipeline.setup(tiny_cfg(*overrides), tmp_path)
