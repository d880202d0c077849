"""Forget protocols (issue 16): sequential deletion requests and memorisation-ranked forget sets."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sparse_mu import pipeline, sequential, stages
from sparse_mu.data import (
    ClassForget,
    Digits,
    ImageData,
    MemorisedForget,
    RandomForget,
    SequentialForget,
    prepare,
)
from sparse_mu.data.memorised import memorisation
from sparse_mu.data.sequential import cumulative, request
from sparse_mu.errors import ConfigError
from sparse_mu.job import _cpu_state
from sparse_mu.training import Classifier
from tests.tiny import fit, mlp, small_digits


@pytest.fixture(scope="module")
def digits():
    return prepare(Digits())


# -- sequential ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, whole", [
    (SequentialForget(of="random", rounds=3, count=50, seed=2), RandomForget(count=50, seed=2)),
    (SequentialForget(of="random", rounds=4, fraction=0.1), RandomForget(fraction=0.1)),
    (SequentialForget(of="class", rounds=5, class_idx=3), ClassForget(class_idx=3)),
])
def test_parts_are_disjoint_cover_the_forget_set_and_are_seeded(digits, spec, whole):
    fs = spec.select(digits)
    one_shot = whole.select(digits)
    assert torch.equal(fs.forget, one_shot.forget) and fs.classes == one_shot.classes
    assert len(fs.parts) == spec.rounds
    joined = torch.cat(fs.parts)
    assert len(joined.unique()) == len(joined) == len(fs.forget)  # disjoint
    assert torch.equal(joined.sort().values, fs.forget)  # and together D_f
    sizes = [len(p) for p in fs.parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(torch.equal(a, b) for a, b in zip(fs.parts, spec.select(digits).parts, strict=True))
    other = dataclasses.replace(spec, seed=spec.seed + 1).select(digits)
    if spec.of == "class":  # the same class, split differently
        assert not torch.equal(other.parts[0], fs.parts[0])


def test_rounds_see_only_what_is_left_and_round_k_is_the_one_shot_set(digits):
    fs = SequentialForget(rounds=3, count=30).select(digits)
    for r in (1, 2, 3):
        before, upto = torch.cat(fs.parts[: r - 1]) if r > 1 else torch.tensor([], dtype=torch.long), \
            torch.cat(fs.parts[:r])
        held, part = request(digits, fs, r)
        assert not torch.isin(held.train, before).any() and len(held.train) == len(digits.train) - len(before)
        assert torch.equal(part.forget, fs.parts[r - 1])
        assert not torch.isin(part.retain, upto).any() and len(part.retain) == len(digits.train) - len(upto)
        after = cumulative(digits, fs, r)
        assert torch.equal(after.forget, upto.sort().values) and torch.equal(after.retain, part.retain)
    assert cumulative(digits, fs, 3).identity() == fs.identity() == RandomForget(count=30).select(digits).identity()
    assert len(fs.to_json()["parts"]) == 3 and "parts" not in fs.identity()


@pytest.mark.parametrize("kwargs, message", [
    ({"rounds": 0}, "forget.rounds must be an integer in [1, 50]"),
    ({"rounds": 51}, "forget.rounds must be an integer in [1, 50]"),
    ({"of": "backdoor"}, "forget.of must be one of class, random"),
])
def test_bad_sequential_settings(digits, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        SequentialForget(count=50, **kwargs).select(digits)


def test_sequential_end_to_end(tiny_cfg, tmp_path, monkeypatch):
    """Round r unlearns part r from round r-1's weights; its reference trains on D minus parts
    1..r only; round k's reference is the one-shot run's."""
    references, rounds, main = [], [], []
    loaders: list[tuple[str, torch.Tensor]] = []
    stage = {"now": ""}
    real_unlearn, real_loader = stages.unlearn, ImageData.loader

    def spy_reference(job, node, state, mask, base, name, *args):
        stage["now"] = name
        references.append(job.forget)
        return real_unlearn(job, node, state, mask, base, name, *args)

    def spy_round(job, node, state, mask, base, name, *args):
        stage["now"] = name
        net, seconds, settings = real_unlearn(job, node, state, mask, base, name, *args)
        rounds.append({"start": {k: v.clone() for k, v in state.items()}, "end": _cpu_state(net),
                       "all": job.data.train.clone(), "forget": job.forget.forget.clone()})
        return net, seconds, settings

    def spy_main(job, node, state, mask, base, name, *args):
        stage["now"] = name
        main.append({k: v.clone() for k, v in state.items()})
        return real_unlearn(job, node, state, mask, base, name, *args)

    def spy_loader(self, indices, *, train, **kw):
        if train:
            loaders.append((stage["now"], indices.clone()))
        return real_loader(self, indices, train=train, **kw)

    monkeypatch.setattr(stages, "unlearn", spy_reference)
    monkeypatch.setattr(sequential, "unlearn", spy_round)
    monkeypatch.setattr(pipeline, "unlearn", spy_main)
    monkeypatch.setattr(ImageData, "loader", spy_loader)
    m = pipeline.run(tiny_cfg("forget=sequential", "forget.rounds=3", "forget.count=30", "arch.width=8",
                              "trainer.limit_train_batches=2", "reference.epochs=2", "unlearner.epochs=1"),
                     tmp_path / "run")
    seq = m["sequential"]["rounds"]
    assert [r["round"] for r in seq] == [1, 2, 3] and [r["forget_size"] for r in seq] == [10, 20, 30]
    assert [r["request_size"] for r in seq] == [10, 10, 10]
    assert all(r["disparity_avg"] is not None and r["retrain"]["UA"] is not None for r in seq)
    assert seq[-1]["reference"] == m["artifacts"]["reference"]  # round 3's reference is the one-shot's, reused
    # references built: the one-shot's (all of D_f), then rounds 1 and 2
    assert [len(f.forget) for f in references] == [30, 10, 20]
    parts = [r["forget"] for r in rounds]
    assert torch.cat(parts).sort().values.tolist() == sorted(forget_indices(tmp_path)["forget"])
    assert [sorted(p.tolist()) for p in parts] == forget_indices(tmp_path)["parts"]
    trained_on = [idx for name, idx in loaders if name == "retrain reference"]
    for f, idx in zip(references, trained_on, strict=True):  # exactly D minus parts 1..r
        assert torch.equal(idx.sort().values, f.retain) and not torch.isin(idx, f.forget).any()
    # the rounds chain: round 1 starts from the pruned model (as the one-shot run), round r from round r-1
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(rounds[0]["start"], main[0])
    assert same(rounds[1]["start"], rounds[0]["end"]) and same(rounds[2]["start"], rounds[1]["end"])
    assert not same(rounds[1]["start"], rounds[0]["start"])
    # round r's unlearner sees D without the parts deleted before it
    for r, rec in enumerate(rounds):
        assert not torch.isin(rec["all"], torch.cat(parts[:r]) if r else parts[0][:0]).any()
        assert torch.isin(rec["forget"], rec["all"]).all()


def forget_indices(tmp_path) -> dict:
    return json.loads((tmp_path / "run" / "forget_indices.json").read_text())


# -- memorisation -------------------------------------------------------------------------------

def record(conf: dict[int, list[float]], n: int) -> dict[str, torch.Tensor]:
    """A confidence record: sample -> its confidence in each epoch (others unseen)."""
    total, count = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for i, values in conf.items():
        total[i], count[i] = sum(values), len(values)
    return {"sum": total, "count": count}


def test_a_sample_learnt_late_with_low_confidence_is_the_most_memorised(digits):
    d = digits.train
    late, early, middle = int(d[0]), int(d[1]), int(d[2])
    conf = {int(i): [0.5, 0.6, 0.7] for i in d}
    conf[late] = [0.02, 0.05, 0.3]  # fitted only at the end, unsure
    conf[early] = [0.99, 1.0, 1.0]  # fitted at once
    conf[middle] = [0.1, 0.2, 0.9]
    rec = record(conf, len(digits.y))
    assert memorisation(rec)[late] > memorisation(rec)[middle] > memorisation(rec)[early]
    most = MemorisedForget(order="most", count=2).select(digits, rec)
    least = MemorisedForget(order="least", count=1).select(digits, rec)
    assert most.forget.tolist() == sorted([late, middle]) and least.forget.tolist() == [early]
    assert most.kind == "memorised" and torch.equal(most.retain, d[~torch.isin(d, most.forget)])


def test_most_and_least_pick_opposite_ends_and_unseen_samples_rank_last(digits):
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(len(digits.y), generator=g, dtype=torch.float64)
    rec = {"sum": scores.clone(), "count": torch.ones_like(scores)}
    unseen = digits.train[:5]
    rec["sum"][unseen], rec["count"][unseen] = 0, 0
    most = MemorisedForget(order="most", fraction=0.2).select(digits, rec)
    least = MemorisedForget(order="least", fraction=0.2).select(digits, rec)
    mem = memorisation(rec)
    assert len(most.forget) == len(least.forget) == round(0.2 * len(digits.train))
    assert not torch.isin(most.forget, least.forget).any()
    assert mem[most.forget].min() >= mem[least.forget].max()
    kept = digits.train[~torch.isin(digits.train, most.forget)]
    assert mem[most.forget].min() >= mem[kept].nan_to_num(-1).max()  # the top of the ranking
    assert not torch.isin(unseen, most.forget).any() and not torch.isin(unseen, least.forget).any()


def test_base_training_records_noisy_labels_as_memorised():
    """Samples whose label was flipped are fitted last (if at all): the record ranks them most
    memorised, and order=least picks none of them."""
    data = small_digits(200, 50)
    flipped = torch.arange(0, 200, 20)  # 10 samples
    y = data.y.clone()
    y[flipped] = (y[flipped] + 1) % 10
    data = dataclasses.replace(data, y=y)
    module = Classifier(mlp(0, 32), data, data.train, epochs=30, batch_size=50, lr=0.1, weight_decay=0.0,
                        rewind_epoch=0, record=True)
    fit(module)
    rec = module.confidence_record()
    assert torch.equal(rec["count"][data.train], torch.full((200,), 30.0, dtype=torch.float64))
    most = MemorisedForget(order="most", count=20).select(data, rec).forget  # the top 10 % of D
    least = MemorisedForget(order="least", count=50).select(data, rec).forget
    assert torch.isin(flipped, most).all()  # seed 0: they rank 1st-7th, 11th, 13th, 14th
    assert not torch.isin(flipped, least).any()


@pytest.mark.parametrize("kwargs, message", [
    ({"order": "middle"}, "forget.order must be one of most, least; got 'middle'"),
    ({"fraction": 1.5}, "forget.fraction must be in (0, 1); got 1.5"),
    ({"count": 0}, "forget.count must be null or an integer in [1, "),
])
def test_bad_memorised_settings(digits, kwargs, message):
    with pytest.raises(ConfigError) as err:
        MemorisedForget(**kwargs).draft(digits)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_memorised_end_to_end_chooses_the_forget_set_after_the_base_model(tiny_cfg, tmp_path):
    m = pipeline.run(tiny_cfg("forget=memorised", "forget.count=40", "arch.width=8", "trainer.limit_train_batches=2",
                              "reference.epochs=2", "unlearner.epochs=1"), tmp_path / "run")
    chosen = json.loads((tmp_path / "run" / "forget_indices.json").read_text())
    assert m["forget_size"] == 40 and chosen["kind"] == "memorised"
    base = tmp_path / "cache" / "base" / m["artifacts"]["base"]
    rec = torch.load(base / "confidence.pt", weights_only=True)
    job = pipeline.setup(tiny_cfg("forget=memorised", "forget.count=40", "arch.width=8"), tmp_path / "x")
    expected = MemorisedForget(count=40).select(job.data, rec).forget.tolist()
    assert chosen["forget"] == expected and chosen["forget"] != job.forget.forget.tolist()  # not the stand-in


def test_recording_leaves_the_training_unchanged():
    """The record reads the steps' own outputs: the weights are those of an unrecorded run."""
    data = small_digits(100, 20)
    nets = []
    for record in (False, True):
        net = mlp(0, 16)
        fit(Classifier(net, data, data.train, epochs=3, batch_size=25, lr=0.1, rewind_epoch=0, seed=0, record=record))
        nets.append(net)
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
