"""Each iterative unlearner computes its objective: a few full-batch SGD steps equal the same
steps on the loss written from ALGORITHMS.md section 4, and the method moves the model the way
the objective says (direction tests on a model that has memorised its training set)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sparse_mu.pruning import BaseWeights
from sparse_mu.unlearn import (
    SCRUB,
    FineTune,
    GradientAscent,
    L1Sparse,
    NegGradPlus,
    RandomLabels,
    Retrain,
    SalUn,
    UnlearnTask,
)
from tests.tiny import (
    PLAIN,
    accuracy,
    assert_same_weights,
    batch,
    ce,
    fit,
    mlp,
    sgd_reference,
)


def task(data, fs, net=None):
    state = {k: v.clone() for k, v in (net or mlp()).state_dict().items()}
    return UnlearnTask(data, fs, None, BaseWeights(state, state, state))


def run(cls, data, fs, net, epochs=2, **kwargs):
    module = cls(net, task(data, fs, net), epochs=epochs, **{**PLAIN, **kwargs})
    fit(module)
    return module


# -- exact steps -----------------------------------------------------------------------------

def test_ft_descends_the_retain_cross_entropy(data, fs):
    net = mlp()
    xr, yr = batch(data, fs.retain)
    want = sgd_reference(net, lambda n, s: F.cross_entropy(n(xr), yr), 2, PLAIN["lr"])
    run(FineTune, data, fs, net)
    assert_same_weights(net, want)


def test_ga_ascends_the_forget_cross_entropy(data, fs):
    net = mlp()
    xf, yf = batch(data, fs.forget)
    want = sgd_reference(net, lambda n, s: -F.cross_entropy(n(xf), yf), 2, PLAIN["lr"])
    run(GradientAscent, data, fs, net)
    assert_same_weights(net, want)


def test_neggrad_plus_descends_retain_and_ascends_beta_times_forget(data, fs):
    net = mlp()
    xr, yr = batch(data, fs.retain)
    xf, yf = batch(data, fs.forget)
    beta = 0.3
    want = sgd_reference(net, lambda n, s: F.cross_entropy(n(xr), yr) - beta * F.cross_entropy(n(xf), yf),
                         2, PLAIN["lr"])
    run(NegGradPlus, data, fs, net, beta=beta)
    assert_same_weights(net, want)


@pytest.mark.parametrize("schedule, factor", [
    ("constant", lambda e, n: 1.0), ("linear_growth", lambda e, n: e / n), ("linear_decay", lambda e, n: 1 - e / n)])
def test_l1_sparse_adds_the_scheduled_l1_norm_of_every_parameter(data, fs, schedule, factor):
    net, gamma, epochs = mlp(), 0.02, 3
    xr, yr = batch(data, fs.retain)

    def loss(n, e):
        l1 = sum(p.abs().sum() for p in n.parameters())
        return F.cross_entropy(n(xr), yr) + gamma * factor(e, epochs) * l1

    want = sgd_reference(net, loss, epochs, PLAIN["lr"])
    run(L1Sparse, data, fs, net, epochs=epochs, gamma=gamma, schedule=schedule)
    assert_same_weights(net, want)


@pytest.mark.parametrize("start", ["init", "rewind"])
def test_retrain_trains_on_retain_from_the_init_or_rewind_weights(data, fs, start):
    init, rewind, final = mlp(1), mlp(2), mlp(3)
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m in (init, rewind, final)]
    xr, yr = batch(data, fs.retain)
    origin = init if start == "init" else rewind
    want = sgd_reference(origin, lambda n, s: F.cross_entropy(n(xr), yr), 2, PLAIN["lr"])
    net = final  # the pipeline hands over the trained model; Retrain must not start from it
    module = Retrain(net, UnlearnTask(data, fs, None, BaseWeights(*states)), start=start, epochs=2, **PLAIN)
    fit(module)
    assert_same_weights(net, want)


def _kl(student_logits, teacher_logits, t):
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.softmax(teacher_logits / t, -1),
                    reduction="batchmean") * t * t


def _smoothed_ce(logits, y, eps):
    """Cross-entropy against (1 - eps) one-hot + eps / K uniform, written out."""
    k = logits.shape[1]
    target = F.one_hot(y, k).float() * (1 - eps) + eps / k
    return -(target * F.log_softmax(logits, 1)).sum(1).mean()


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_scrub_minimises_retain_terms_and_maximises_forget_kl_in_its_max_epochs(data, fs, memorised,
                                                                                 label_smoothing):
    """3 epochs, max-steps in the first 2 (at step 0 the student is the teacher, so the KL
    terms have zero gradient: steps 1 and 2 are where their signs show). The retain CE is the
    label-smoothed one when label_smoothing > 0."""
    net = copy.deepcopy(memorised)
    teacher = copy.deepcopy(memorised).requires_grad_(False)
    xr, yr = batch(data, fs.retain)
    xf, _ = batch(data, fs.forget)
    kw = {"kd_weight": 0.7, "ce_weight": 0.2, "temperature": 2.0, "forget_epochs": 2, "forget_batch_size": 10_000}

    def loss(n, e):
        out = n(xr)
        total = kw["ce_weight"] * _smoothed_ce(out, yr, label_smoothing) + kw["kd_weight"] * _kl(out, teacher(xr), 2.0)
        if e < kw["forget_epochs"]:
            total = total - _kl(n(xf), teacher(xf), 2.0)
        return total

    want = sgd_reference(net, loss, 3, 1.0)
    run(SCRUB, data, fs, net, epochs=3, **{**kw, "lr": 1.0, "label_smoothing": label_smoothing})
    assert_same_weights(net, want, atol=1e-5)


# -- directions ---------------------------------------------------------------------------------

def test_ga_raises_the_forget_loss(data, fs, memorised):
    net = copy.deepcopy(memorised)
    before = ce(net, data, fs.forget)
    run(GradientAscent, data, fs, net, epochs=8, lr=0.05, batch_size=8)
    assert ce(net, data, fs.forget) > before + 1.0


def test_neggrad_plus_raises_the_forget_loss_and_keeps_the_retain_loss(data, fs, memorised):
    """Against FT at the same settings (FT lowers the forget loss of a memorised model too)."""
    before_f = ce(memorised, data, fs.forget)
    ng, ft = copy.deepcopy(memorised), copy.deepcopy(memorised)
    settings = {"epochs": 5, "lr": 0.1, "batch_size": 16}
    run(NegGradPlus, data, fs, ng, beta=0.7, **settings)
    run(FineTune, data, fs, ft, **settings)
    assert ce(ng, data, fs.forget) > 5 * max(before_f, ce(ft, data, fs.forget))
    assert ce(ng, data, fs.retain) < 0.1
    assert accuracy(ng, data, fs.retain) >= 98


def test_scrub_max_steps_push_the_student_away_from_the_teacher_on_forget(data, fs, memorised):
    """KL(teacher || student) on D_f ends far above the same run without max-steps."""
    kls, acc = {}, {}
    for forget_epochs in (0, 6):
        net = copy.deepcopy(memorised)
        module = run(SCRUB, data, fs, net, epochs=6, lr=0.1, forget_epochs=forget_epochs, forget_batch_size=16,
                     batch_size=32, kd_weight=1.0, ce_weight=1.0, temperature=4.0)
        xf, _ = batch(data, fs.forget)
        with torch.no_grad():
            kls[forget_epochs] = _kl(net(xf), module.teacher(xf), 1.0).item()
        acc[forget_epochs] = accuracy(net, data, fs.forget), accuracy(net, data, fs.retain)
    assert kls[6] > 10 * kls[0], kls
    assert acc[6][0] < acc[0][0] and acc[6][1] > 95, acc


class _Targets:
    """Records, for every forward pass of the net, its input rows and mode, and the targets of
    the cross-entropy that follows it (training steps only: SalUn's saliency pass is in eval mode)."""

    def __init__(self, net, monkeypatch):
        self.inputs, self.targets = [], []
        net.register_forward_hook(lambda m, args, out: self.inputs.append((m.training, args[0].detach().clone())))
        real = F.cross_entropy

        def spy(logits, target, *a, **k):
            self.targets.append(target.detach().clone())
            return real(logits, target, *a, **k)

        monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)

    def by_index(self, data) -> dict[int, list[int]]:
        """Dataset index -> the targets it was trained toward (matched by image)."""
        x_all, _ = batch(data, data.train)
        rows = {x_all[i].numpy().tobytes(): int(data.train[i]) for i in range(len(data.train))}
        out: dict[int, list[int]] = {}
        for (training, x), t in zip(self.inputs, self.targets, strict=True):
            if not training:
                continue
            for xi, ti in zip(x, t, strict=True):
                out.setdefault(rows[xi.numpy().tobytes()], []).append(int(ti))
        return out


@pytest.mark.parametrize("cls", [RandomLabels, SalUn])
def test_rl_and_salun_train_forget_samples_on_wrong_labels_and_retain_on_true(data, fs, cls, monkeypatch):
    net = mlp()
    module = cls(net, task(data, fs, net), epochs=2, batch_size=32, lr=0.01, momentum=0.0, weight_decay=0.0)
    spy = _Targets(net, monkeypatch)
    fit(module)
    seen = spy.by_index(data)
    forget = set(fs.forget.tolist())
    assert forget | set(fs.retain.tolist()) == set(seen)  # every sample of D, forget ones included
    wrong = [t != int(data.y[i]) for i in forget for t in seen[i]]
    assert sum(wrong) / len(wrong) > 0.75  # fixed wrong labels: 100 %; redrawn uniform labels: ~90 %
    assert all(t == int(data.y[i]) for i in fs.retain.tolist() for t in seen[i])


@pytest.mark.parametrize("cls", [RandomLabels, SalUn])
def test_rl_and_salun_lower_the_forget_accuracy_below_the_retain_accuracy(data, fs, memorised, cls):
    net = copy.deepcopy(memorised)
    assert accuracy(net, data, fs.forget) == 100
    # one shuffled stream and fixed wrong labels: with the published schedule (labels redrawn each
    # epoch, a D_f pass then a D_r pass) the closing D_r passes relearn these random, generalisable
    # forget samples (forget accuracy stays ~97 % here); the targets test above covers that schedule
    run(cls, data, fs, net, epochs=10, batch_size=16, lr=0.2, order="joint", relabel="fixed")
    forget, retain = accuracy(net, data, fs.forget), accuracy(net, data, fs.retain)
    assert forget < 75 and forget < retain - 10, (forget, retain)


def test_salun_moves_only_the_weights_of_largest_forget_gradient(data, fs, memorised):
    """Weight decay 0: a coordinate moves only if its |gradient of the summed forget CE| on the
    original model is among the top `ratio`; nearly all of those do move."""
    ratio = 0.3
    net = copy.deepcopy(memorised)
    xf, yf = batch(data, fs.forget)
    net.zero_grad()
    F.cross_entropy(net(xf), yf, reduction="sum").backward()
    saliency = {k: p.grad.abs().clone() for k, p in net.named_parameters()}
    net.zero_grad()
    flat = torch.cat([s.flatten() for s in saliency.values()])
    threshold = flat.topk(round(ratio * len(flat))).values.min()
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    run(SalUn, data, fs, net, epochs=2, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.0, ratio=ratio)
    moved = torch.cat([(p.detach() != before[k]).flatten() for k, p in net.named_parameters()])
    assert (flat[moved] >= threshold).all()
    assert moved.sum() >= 0.8 * (flat >= threshold).sum()


# -- settings that the tests above run at their defaults ----------------------------------------

def test_l1_sparse_passes_its_learning_rate_schedule_on(data, fs):
    """lr_schedule=step with lr_gamma 0.5 at half of 2 epochs: the second step has half the LR
    (plain SGD: a step at lr * f is a step at lr on f * loss)."""
    net, gamma = mlp(), 0.02
    xr, yr = batch(data, fs.retain)

    def loss(n, e):
        return (1.0, 0.5)[e] * (F.cross_entropy(n(xr), yr) + gamma * sum(p.abs().sum() for p in n.parameters()))

    want = sgd_reference(net, loss, 2, PLAIN["lr"])
    run(L1Sparse, data, fs, net, gamma=gamma, schedule="constant", lr_schedule="step", lr_gamma=0.5, milestones=[0.5])
    assert_same_weights(net, want)


def test_rl_fixed_labels_are_always_wrong_also_when_the_new_label_is_class_0(data, fs, monkeypatch):
    net = mlp()
    module = RandomLabels(net, task(data, fs, net), epochs=2, relabel="fixed", **PLAIN)
    spy = _Targets(net, monkeypatch)
    fit(module)
    seen = spy.by_index(data)
    targets = {i: set(seen[i]) for i in fs.forget.tolist()}
    assert all(len(t) == 1 for t in targets.values())  # one label per sample, kept across epochs
    assert all(int(data.y[i]) not in t for i, t in targets.items())  # always another class
    assert any(t == {0} for t in targets.values())  # class 0 is a relabel target too


def test_salun_saliency_on_a_sparse_model_ranks_only_the_unpruned_coordinates(data, fs, memorised):
    """Pruned weights are never salient; the top `ratio` of the m coordinates that can move
    (kept weights of the masked layer, every bias, the head) by |gradient of the summed forget CE|."""
    from sparse_mu.pruning import Mask

    ratio = 0.8  # deep enough that a pruned coordinate ranked at any score >= 0 would be picked
    net = copy.deepcopy(memorised)
    g = torch.Generator().manual_seed(0)
    mask = Mask({"1.weight": torch.rand(net[1].weight.shape, generator=g) > 0.5})
    with torch.no_grad():
        net[1].weight.mul_(mask.tensors["1.weight"])
    xf, yf = batch(data, fs.forget)
    net.zero_grad()
    F.cross_entropy(net(xf), yf, reduction="sum").backward()
    movable = {k: mask.tensors[k] if k in mask.tensors else torch.ones_like(p, dtype=torch.bool)
               for k, p in net.named_parameters()}
    scores = torch.cat([torch.where(movable[k], p.grad.abs(), -1.0).flatten() for k, p in net.named_parameters()])
    net.zero_grad()
    m = int(sum(v.sum() for v in movable.values()))
    want = torch.zeros_like(scores, dtype=torch.bool)
    want[scores.topk(round(ratio * m)).indices] = True
    state = {k: v.clone() for k, v in net.state_dict().items()}
    module = SalUn(net, UnlearnTask(data, fs, mask, BaseWeights(state, state, state)), epochs=1, ratio=ratio,
                   **{**PLAIN, "batch_size": 16})  # the forget gradient summed over 3 batches
    fit(module, mask=mask)
    got = torch.cat([module.saliency[k].flatten() for k, _ in net.named_parameters()]) != 0
    assert torch.equal(got, want)


def test_scrub_skips_the_steps_without_a_loss_term(data, fs, memorised):
    """forget_epochs 0 and D_f in 4 batches beside 1 batch of D_r: 3 steps per epoch have
    nothing to learn from and must not step (with momentum, an empty step still moves)."""
    net = copy.deepcopy(memorised)
    teacher = copy.deepcopy(memorised).requires_grad_(False)
    xr, yr = batch(data, fs.retain)
    kw = {"kd_weight": 0.5, "ce_weight": 1.0, "temperature": 2.0, "forget_epochs": 0, "forget_batch_size": 10}
    want = copy.deepcopy(net)
    opt = torch.optim.SGD(want.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        out = want(xr)
        (F.cross_entropy(out, yr) + 0.5 * _kl(out, teacher(xr), 2.0)).backward()
        opt.step()
    run(SCRUB, data, fs, net, epochs=2, **{**kw, "momentum": 0.9})
    assert_same_weights(net, want, atol=1e-5)


def test_rl_per_epoch_labels_are_uniform_and_drawn_from_the_seed_and_epoch(data, fs):
    """Labels redrawn per epoch: over all classes (class 0 included, the true one possible),
    the same for the same (seed, epoch) whatever the global random state, new for another
    epoch or seed."""
    def labels(seed, epoch):
        torch.manual_seed(seed * 100 + epoch + 7)  # the global state must not matter
        module = RandomLabels(mlp(), task(data, fs), seed=seed, epochs=1, **PLAIN)
        module.draw_labels(epoch)
        return module.relabel[fs.forget].clone()

    a = labels(0, 1)
    assert torch.equal(a, labels(0, 1)) and not torch.equal(a, labels(0, 2)) and not torch.equal(a, labels(1, 1))
    drawn = torch.cat([labels(0, e) for e in range(5)])
    assert set(drawn.tolist()) == set(range(10))  # every class, 0 included
    assert (drawn == data.y[fs.forget].repeat(5)).any()  # the true label too: uniform over all classes
