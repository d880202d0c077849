"""Metrics by hand: UA / RA / TA (class-wise, the forgotten class apart) from a model whose
predictions are known per sample; the attack features; MIA-Efficacy on a case where only the
confidence feature tells members from non-members; MIA-Privacy's balanced accuracy."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu.data import Augment, ForgetSet, ImageData
from sparse_mu.metrics import (
    accuracy,
    attack_success,
    disparity_average,
    evaluate,
    kl_divergence,
    mia,
    mia_efficacy,
    mia_privacy,
)
from sparse_mu.metrics.mia import features
from tests.conftest import compose_cfg


class Lookup(nn.Module):
    """Predicts the class written in pixel (0, 0) of the image (value 20 * class)."""

    def forward(self, x):
        pred = (x[:, 0, 0, 0] * 255 / 20).round().long()
        return F.one_hot(pred, 4).float() * 5


def _labelled(labels, correct):
    """Labels and the images that make Lookup right on the first `correct` samples only."""
    y = torch.tensor(labels)
    pred = torch.where(torch.arange(len(y)) < correct, y, (y + 1) % 4)
    x = torch.zeros(len(y), 1, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = (20 * pred).to(torch.uint8)
    return x, y


def test_ua_ra_ta_and_the_forgotten_class_test_accuracy_by_hand():
    parts = [_labelled([0] * 10, 3),  # D_f: class 0, 3 of 10 right -> UA 70
             _labelled([1, 2, 3] * 10, 27),  # D_r: 27 of 30 right -> RA 90
             _labelled([1, 2, 3] * 5, 12),  # test without class 0: 12 of 15 -> TA 80
             _labelled([0] * 5, 2)]  # test, class 0: 2 of 5 -> 40
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    empty = torch.zeros(0, dtype=torch.long)
    data = ImageData("lookup", x, y, torch.arange(40), empty, torch.arange(40, 60), list("abcd"),
                     torch.tensor([0.0]), torch.tensor([1.0]), Augment(), "lookup")
    fs = ForgetSet("class", torch.arange(10), torch.arange(10, 40), (0,))
    m = evaluate(Lookup(), data, fs, seed=0)
    assert "MIA_privacy" not in m  # off by default
    m = evaluate(Lookup(), data, fs, seed=0, privacy=True)
    assert m["UA"] == pytest.approx(70) and m["RA"] == pytest.approx(90)
    assert m["TA"] == pytest.approx(80) and m["TA_forgotten_class"] == pytest.approx(40)
    # MIA-Efficacy is the confidence attack on these very outputs
    probs = torch.softmax(Lookup()(x.float() / 255), 1)
    out = {k: (probs[i], y[i]) for k, i in [("f", slice(0, 10)), ("r", slice(10, 40)), ("t", slice(40, 55))]}
    assert m["MIA_efficacy"] == mia_efficacy(out["r"], out["t"], out["f"], seed=0, name="confidence")
    assert m["MIA_privacy"] == mia_privacy(out["r"], out["t"], seed=0, name="confidence")


def test_accuracy_and_the_attack_features_by_hand():
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    y = torch.tensor([0, 2])
    assert accuracy(p, y) == pytest.approx(50.0)
    assert features(p, y, "correctness")[:, 0].tolist() == [1.0, 0.0]
    assert features(p, y, "confidence")[:, 0] == pytest.approx([0.6, 0.3])
    entropy = [-sum(v * math.log(v) for v in row) for row in p.tolist()]
    assert features(p, y, "entropy")[:, 0] == pytest.approx(entropy)
    m_entropy = -(1 - 0.3) * math.log(0.3) - 0.2 * math.log(0.8) - 0.5 * math.log(0.5)
    assert features(p, y, "m_entropy")[1, 0] == pytest.approx(m_entropy)
    assert np.array_equal(features(p, y, "prob"), p.double().numpy())
    assert accuracy(p[:1], y[:1]) == 100.0 and math.isnan(accuracy(p[:0], y[:0]))
    assert features(p, torch.tensor([0, 1]), "correctness")[:, 0].tolist() == [1.0, 1.0]  # argmax per row


def test_kl_of_a_single_row_and_disparity_of_no_gap():
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]])
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75))
    assert math.isnan(kl_divergence(p[:0], q[:0]))
    assert math.isnan(disparity_average(dict.fromkeys(("UA", "RA", "TA", "MIA_efficacy"), float("nan"))))


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.log()).sum(-1)


def _outputs(kind: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes, label 0, always predicted right. "member": p_y = 0.7, the rest on one class;
    "non_member": p_y = q, the rest spread evenly, q chosen so that the entropy is the same."""
    member = torch.tensor([0.7, 0.3] + [0.0] * 8, dtype=torch.double)
    if kind == "member":
        p = member
    else:
        lo, hi = 0.7, 0.999
        for _ in range(60):  # bisection: the entropy falls as q grows
            q = (lo + hi) / 2
            p = torch.tensor([q] + [(1 - q) / 9] * 9, dtype=torch.double)
            lo, hi = (q, hi) if _entropy(p) > _entropy(member.clamp_min(1e-300)) else (lo, q)
    return p.float().expand(n, 10).clone(), torch.zeros(n, dtype=torch.long)


def test_mia_efficacy_uses_the_confidence_feature_by_default():
    """Members and non-members here differ in confidence: correctness is the same for both (so
    that attack cannot tell a forgotten D_f from a remembered one), entropy the same to 1e-6
    (float32 probabilities: an RBF SVC still splits that hair, so it is not asserted)."""
    retain, test = _outputs("member", 200), _outputs("non_member", 100)
    forgotten, remembered = _outputs("non_member", 50), _outputs("member", 50)
    assert features(*test, "entropy") == pytest.approx(features(*retain, "entropy")[:100], abs=1e-6)
    conf = [mia_efficacy(retain, test, f, seed=0, name="confidence") for f in (forgotten, remembered)]
    assert conf == [100.0, 0.0]
    a, b = (mia_efficacy(retain, test, f, seed=0, name="correctness") for f in (forgotten, remembered))
    assert a == b
    assert [mia_efficacy(retain, test, f, seed=0) for f in (forgotten, remembered)] == conf
    assert inspect.signature(mia_efficacy).parameters["name"].default == "confidence"
    assert inspect.signature(evaluate).parameters["mia_features"].default[0] == "confidence"
    assert list(compose_cfg([]).eval.mia_features)[0] == "confidence"


def test_mia_privacy_is_the_balanced_accuracy_on_the_held_out_halves():
    """Members: confidence 0.99, except every seventh at 0.5; test: 0.5, except every fifth at
    0.99. The attack calls 0.99 a member and 0.5 a non-member, so its balanced accuracy is the
    mean of the shares of 0.99 among the target members and of 0.5 among the target test samples
    (the halves the attack was not fitted on, as many members as test samples)."""
    def rows(conf):
        c = torch.tensor(conf)
        return torch.stack([c, 1 - c], 1), torch.zeros(len(c), dtype=torch.long)

    outlier = torch.arange(300) % 7 == 0
    retain = rows(torch.where(outlier, 0.5, 0.99).tolist())
    member_like = torch.arange(100) % 5 == 0
    test = rows(torch.where(member_like, 0.99, 0.5).tolist())
    g = torch.Generator().manual_seed(7)
    t, r = torch.randperm(100, generator=g), torch.randperm(300, generator=g)
    members, non_members = r[50:100], t[50:100]
    want = 100 * 0.5 * (float((~outlier[members]).float().mean()) + float((~member_like[non_members]).float().mean()))
    assert mia_privacy(retain, test, seed=7) == pytest.approx(want)
    assert want < 95  # the case discriminates: not every target is told apart


def _spread(lo: float, hi: float, n: int, seed: int):
    c = torch.tensor(np.random.default_rng(seed).uniform(lo, hi, n), dtype=torch.float32)
    return torch.stack([c, 1 - c], 1), torch.zeros(n, dtype=torch.long)


def test_mia_draws_its_shadow_members_from_its_own_seed(monkeypatch):
    """Overlapping confidences: the result depends on which D_r samples are the shadow members;
    those come from `seed`, never from the global RNG. The attack is SVC(C=3, rbf, gamma=auto)."""
    retain, test, forget = _spread(0.5, 1.0, 300, 0), _spread(0.3, 0.8, 100, 1), _spread(0.4, 0.9, 200, 2)
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        runs.append((mia_efficacy(retain, test, forget, seed=0), mia_privacy(retain, test, seed=0)))
    assert runs[0] == runs[1]
    other = (mia_efficacy(retain, test, forget, seed=5), mia_privacy(retain, test, seed=5))
    assert other[0] != runs[0][0] and other[1] != runs[0][1]
    assert not math.isnan(mia_efficacy(retain, test, (forget[0][:1], forget[1][:1]), seed=0))
    assert math.isnan(mia_efficacy(retain, test, (forget[0][:0], forget[1][:0]), seed=0))
    fitted = []
    real = mia.SVC
    monkeypatch.setattr(mia, "SVC", lambda **kw: fitted.append(kw) or real(**kw))
    mia_efficacy(retain, test, forget, seed=0)
    assert fitted == [{"C": 3, "gamma": "auto", "kernel": "rbf"}]


def test_mia_privacy_with_fewer_members_than_test_samples():
    """|D_r| < |test|: both target halves shrink to the members left after the shadow half."""
    def rows(conf):
        c = torch.tensor(conf)
        return torch.stack([c, 1 - c], 1), torch.zeros(len(c), dtype=torch.long)

    retain = rows([0.99] * 60)
    member_like = torch.arange(100) % 5 == 0
    test = rows(torch.where(member_like, 0.99, 0.5).tolist())
    g = torch.Generator().manual_seed(3)
    t = torch.randperm(100, generator=g)
    want = 100 * 0.5 * (1 + float((~member_like[t[50:60]]).float().mean()))
    assert mia_privacy(retain, test, seed=3) == pytest.approx(want)


def test_asr_is_nan_without_images_of_other_classes():
    probs, labels = torch.tensor([[0.2, 0.8], [0.9, 0.1]]), torch.tensor([1, 1])
    out = attack_success(probs, labels, target=1)
    assert math.isnan(out["ASR"]) and out["ASR_legacy"] == pytest.approx(50.0)


def test_evaluate_runs_one_attack_per_feature_and_privacy_on_the_first():
    parts = [_labelled([0, 1] * 5, 6), _labelled([1, 2, 3] * 10, 25), _labelled([1, 2, 3] * 5, 11)]
    x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    empty = torch.zeros(0, dtype=torch.long)
    data = ImageData("lookup", x, y, torch.arange(40), empty, torch.arange(40, 55), list("abcd"),
                     torch.tensor([0.0]), torch.tensor([1.0]), Augment(), "lookup")
    fs = ForgetSet("random", torch.arange(10), torch.arange(10, 40))
    m = evaluate(Lookup(), data, fs, seed=0, mia_features=("prob", "correctness"), privacy=True)
    probs = torch.softmax(Lookup()(x.float() / 255), 1)
    f, r, t = ((probs[i], y[i]) for i in (slice(0, 10), slice(10, 40), slice(40, 55)))
    assert {k for k in m if k.startswith("MIA")} == {"MIA_efficacy", "MIA_efficacy_correctness", "MIA_privacy"}
    assert "TA_forgotten_class" not in m  # random forgetting: no class is forgotten
    assert m["MIA_efficacy"] == mia_efficacy(r, t, f, seed=0, name="prob") != m["MIA_efficacy_correctness"]
    assert m["MIA_efficacy_correctness"] == mia_efficacy(r, t, f, seed=0, name="correctness")
    assert m["MIA_privacy"] == mia_privacy(r, t, seed=0, name="prob") != mia_privacy(r, t, seed=0, name="correctness")
