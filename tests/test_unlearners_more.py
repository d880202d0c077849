"""SSD, Bad Teacher, EU-k, CF-k, Boundary Shrink and Boundary Expand: each computes its method."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu.data import Augment, ClassForget, Digits, ImageData, prepare
from sparse_mu.errors import ConfigError
from sparse_mu.pruning import BaseWeights
from sparse_mu.training import Classifier
from sparse_mu.unlearn import (
    BadTeacher,
    BoundaryExpand,
    BoundaryShrink,
    LastLayersFineTune,
    LastLayersRetrain,
    SelectiveSynapticDampening,
    UnlearnTask,
)
from sparse_mu.unlearn.last_layers import last_layers
from tests.test_unlearners import LOOP, fit, make_net, make_task
from tests.tiny import PLAIN, forget_set, sgd_reference, small_digits
from tests.tiny import fit as fit_tiny


@pytest.fixture(scope="module")
def digits():
    return prepare(Digits())


@pytest.fixture(scope="module")
def trained(digits):
    """A SmallCNN that fits digits (train accuracy ~100 %): forgetting means something."""
    L.seed_everything(0, verbose=False)
    net = make_net()
    module = Classifier(net, digits, digits.train, epochs=8, batch_size=64, lr=0.05, rewind_epoch=0)
    L.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, accelerator="cpu").fit(module)
    return {k: v.clone() for k, v in net.state_dict().items()}


def trained_net(state):
    net = make_net()
    net.load_state_dict(state)
    return net


def accuracy(net, data, idx) -> float:
    net.eval()
    with torch.no_grad():
        x, y, _ = next(iter(data.loader(idx, batch_size=len(idx), train=False)))
        return (net(x).argmax(-1) == y).float().mean().item() * 100


# -- SSD --------------------------------------------------------------------------------------

def test_ssd_dampens_exactly_the_weights_the_forget_set_relies_on(digits, trained):
    net = trained_net(trained)
    task = make_task(digits, net, sparsity=None, forget=ClassForget(3))
    module = SelectiveSynapticDampening(net, task, alpha=2.0, lam=0.5, batch_size=100)
    # the published statistic, computed directly: mean over batches of squared batch gradients
    ref = trained_net(trained).eval()
    imp = {}
    for part, idx in (("all", digits.train), ("forget", task.forget.forget)):
        total, batches = {k: torch.zeros_like(p) for k, p in ref.named_parameters()}, 0
        for x, y, _ in digits.loader(idx, batch_size=100, train=False):
            ref.zero_grad()
            F.cross_entropy(ref(x), y).backward()
            for k, p in ref.named_parameters():
                total[k] += p.grad ** 2
            batches += 1
        imp[part] = {k: v / batches for k, v in total.items()}
    fit(module, batches=None)
    changed = 0
    for k, p in net.named_parameters():
        old, full, forget = trained[k], imp["all"][k], imp["forget"][k]
        selected = forget > 2.0 * full
        want = torch.where(selected, old * (0.5 * full / forget).clamp(max=1.0), old)
        torch.testing.assert_close(p.detach(), want, rtol=1e-4, atol=1e-7)
        changed += int(selected.sum())
    assert module.dampened == changed > 0
    assert accuracy(net, digits, task.forget.forget) < accuracy(trained_net(trained), digits, task.forget.forget)


def test_ssd_settings_are_checked(digits):
    net = make_net()
    with pytest.raises(ConfigError, match="unlearner.alpha must be > 0"):
        SelectiveSynapticDampening(net, make_task(digits, net, sparsity=None), alpha=0.0)


# -- Bad Teacher ------------------------------------------------------------------------------

def test_bad_teacher_targets_the_incompetent_teacher_on_forget_samples_only(digits):
    net = make_net()
    task = make_task(digits, net, sparsity=None)
    module = BadTeacher(net, task, **{**LOOP, "optimizer": "adam"}, retain_fraction=0.5, temperature=2.0)
    n_retain = len(task.forget.retain)
    assert len(module.samples) == len(task.forget.forget) + round(0.5 * n_retain)
    x, _, idx = next(iter(digits.loader(module.samples, batch_size=len(module.samples), train=False)))
    forget = module.is_forget[idx]
    assert forget.any() and (~forget).any()
    target = module.target(x, forget)
    with torch.no_grad():
        bad, good = F.softmax(module.incompetent(x) / 2, -1), F.softmax(module.competent(x) / 2, -1)
    torch.testing.assert_close(target[forget], bad[forget])
    torch.testing.assert_close(target[~forget], good[~forget])
    assert not torch.allclose(bad, good)  # the incompetent teacher is a different, random model


def test_bad_teacher_moves_the_student_toward_the_bad_teacher_on_d_f(digits, trained):
    net = trained_net(trained)
    task = make_task(digits, net, sparsity=None, forget=ClassForget(3))
    module = BadTeacher(net, task, **{**LOOP, "epochs": 3, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0})
    fx, _, _ = next(iter(digits.loader(task.forget.forget, batch_size=len(task.forget.forget), train=False)))

    def kl_to_bad() -> float:
        net.eval()
        with torch.no_grad():
            return F.kl_div(F.log_softmax(net(fx), -1), F.softmax(module.incompetent(fx), -1),
                            reduction="batchmean").item()

    before = kl_to_bad()
    net.train()
    fit(module, batches=None)
    assert kl_to_bad() < 0.5 * before
    assert accuracy(net, digits, task.forget.forget) < 50
    assert accuracy(net, digits, task.forget.retain) > 90


# -- EU-k / CF-k ------------------------------------------------------------------------------

def test_last_layers_are_the_last_k_conv_linear_layers_with_their_norms():
    # SmallCNN: features.{0,3,7} convs with BatchNorm features.{1,4,8}, then the head fc
    assert last_layers(make_net(), 1) == ["fc"]
    assert last_layers(make_net(), 2) == ["features.7", "features.8", "fc"]
    assert last_layers(make_net(), 3) == ["features.3", "features.4", "features.7", "features.8", "fc"]


@pytest.mark.parametrize("cls", [LastLayersFineTune, LastLayersRetrain])
def test_only_the_last_k_layers_move(digits, trained, cls):
    net = trained_net(trained)
    task = make_task(digits, net, sparsity=None)
    module = cls(net, task, **{**LOOP, "k": 2})
    trained_prefixes = tuple(f"{n}." for n in module.trained)
    after_init = {k: v.clone() for k, v in net.state_dict().items()}
    fit(module, batches=None)
    for k, v in net.state_dict().items():
        if k.startswith(trained_prefixes):
            if v.is_floating_point() and "running" not in k:
                assert not torch.equal(v, after_init[k]), k
        else:  # frozen weights and BatchNorm statistics: bit-identical
            assert torch.equal(v, trained[k]), k
    reinit = any(not torch.equal(after_init[k], trained[k]) for k in after_init if k.startswith(trained_prefixes))
    assert reinit == (cls is LastLayersRetrain)


def test_eu_k_reinitialisation_is_seeded(digits, trained):
    """The same job seed gives the same fresh layers whatever the global random state; another
    seed gives others."""
    nets = []
    for seed, noise in ((0, 1), (0, 2), (1, 1)):
        torch.manual_seed(noise)
        torch.rand(100)  # a different global random state
        net = trained_net(trained)
        LastLayersRetrain(net, make_task(digits, net, sparsity=None), **{**LOOP, "k": 1, "seed": seed})
        nets.append(net.fc.weight.detach().clone())
    assert torch.equal(nets[0], nets[1]) and not torch.equal(nets[0], nets[2])


def test_k_is_checked(digits):
    net = make_net()
    with pytest.raises(ConfigError, match="unlearner.k must be an integer in"):
        LastLayersFineTune(net, make_task(digits, net, sparsity=None), **{**LOOP, "k": 99})


# -- Boundary Shrink / Expand -----------------------------------------------------------------

def test_boundary_shrink_labels_come_from_one_fgsm_step_on_the_original_model(digits, trained):
    net = trained_net(trained)
    task = make_task(digits, net, sparsity=None, forget=ClassForget(3))
    module = BoundaryShrink(net, task, **LOOP, bound=0.3)
    module.on_train_epoch_start()
    x, y, _ = next(iter(digits.loader(task.forget.forget, batch_size=64, train=False)))
    ref = trained_net(trained).eval()
    xa = x.clone().requires_grad_(True)
    F.cross_entropy(ref(xa), y).backward()
    std, mean = digits.std.view(1, -1, 1, 1), digits.mean.view(1, -1, 1, 1)
    stepped = (x + 0.3 / std * xa.grad.sign()).clamp(-mean / std, (1 - mean) / std)
    labels = module.neighbour_labels(x, y)
    assert torch.equal(labels, ref(stepped).argmax(-1))
    assert (labels != y).float().mean() > 0.5  # the step crosses into a neighbouring class


def test_boundary_shrink_and_expand_forget_the_class_and_keep_the_rest(digits, trained):
    for cls, extra in ((BoundaryShrink, {"bound": 0.3}), (BoundaryExpand, {})):
        net = trained_net(trained)
        task = make_task(digits, net, sparsity=None, forget=ClassForget(3))
        assert accuracy(net, digits, task.forget.forget) > 90
        net.train()  # as the pipeline hands it over (Lightning keeps a module's eval mode)
        fit(cls(net, task, **{**LOOP, "epochs": 4, "lr": 0.005, "weight_decay": 0.0}, **extra), batches=None)
        assert accuracy(net, digits, task.forget.forget) < 30, cls.__name__
        assert accuracy(net, digits, task.forget.retain) > 85, cls.__name__


def test_boundary_expand_drops_its_shadow_class(digits):
    net = make_net()
    task = make_task(digits, net, sparsity=None)
    module = BoundaryExpand(net, task, **LOOP)
    shadow = module.shadow.weight.detach().clone()
    fit(module)
    assert not torch.equal(module.shadow.weight, shadow)  # the shadow output was trained
    x, _, _ = next(iter(digits.loader(task.forget.forget, batch_size=8, train=False)))
    assert net(x).shape == (8, digits.num_classes)
    assert not net.fc._forward_hooks  # the feature hook is gone after training


def test_every_unlearner_default_is_its_config_value():
    """A method's own keyword defaults (beta, gamma, temperature, ratio, ...) equal its
    config's, so a method built in Python runs the documented setting. The loop settings
    (lr, epochs, budget, ...) are the configs' business. Retrain's `then_prune` is absent from
    retrain.yaml on purpose (set only by retrain_then_prune.yaml), so existing reference keys
    do not move."""
    import glob
    import importlib
    import inspect

    from omegaconf import OmegaConf

    from sparse_mu.unlearn import L1Sparse

    loop = {"budget", "epochs", "lr", "momentum", "weight_decay", "schedule", "batch_size", "optimizer",
            "milestones", "gamma", "chunk_size", "memory_mb", "node", "seed", "label_smoothing", "warmup_epochs"}
    checked = 0
    for path in sorted(glob.glob("sparse_mu/conf/unlearner/*.yaml")):
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        if "_target_" not in cfg:
            continue  # an alias of another config (ft_l1)
        module, name = cfg["_target_"].rsplit(".", 1)
        params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        for key, p in params.items():
            if key in loop or p.default is inspect.Parameter.empty or (name, key) == ("Retrain", "then_prune"):
                continue
            assert cfg.get(key, "<absent>") == p.default, (path, key)
            checked += 1
    # l1-sparse's L1 `gamma` is its own setting, not the LR factor of the loop
    l1 = OmegaConf.load("sparse_mu/conf/unlearner/l1_sparse.yaml")
    params = inspect.signature(L1Sparse).parameters
    assert (params["gamma"].default, params["lr_gamma"].default) == (l1.gamma, l1.lr_gamma)
    assert checked >= 20


def rgb_data(n: int = 24):
    """Random 3-channel 5x5 images with a different mean and std per channel."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 5, 5), generator=g, dtype=torch.uint8)
    empty = torch.zeros(0, dtype=torch.long)
    return ImageData("rgb", x, torch.arange(n) % 3, torch.arange(n), empty, empty, ["a", "b", "c"],
                     torch.tensor([0.2, 0.5, 0.7]), torch.tensor([0.1, 0.3, 0.25]), Augment(), "rgb")


def tiny_task(data, net, forget):
    state = {k: v.clone() for k, v in net.state_dict().items()}
    return UnlearnTask(data, forget_set(data, forget), None, BaseWeights(state, state, state))


def test_boundary_shrink_steps_each_rgb_channel_in_pixel_units_and_clips_to_valid_pixels():
    """On RGB data with per-channel mean and std: the attacked image is the original one,
    in pixels p = x * std + mean, moved by bound * sign(gradient) and clipped to [0, 1] channel
    by channel, normalised again; the label is the original model's prediction on it."""
    data = rgb_data()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(75, 3))
    ref = copy.deepcopy(net).eval()
    module = BoundaryShrink(net, tiny_task(data, net, torch.arange(12)), **{**LOOP, "epochs": 1}, bound=0.1)
    module.on_train_epoch_start()
    seen = []
    module.attacked.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    x, y, _ = next(iter(data.loader(torch.arange(12), batch_size=12, train=False)))
    labels = module.neighbour_labels(x, y)
    xa = x.clone().requires_grad_(True)
    F.cross_entropy(ref(xa), y).backward()
    mean, std = torch.tensor([0.2, 0.5, 0.7]).view(3, 1, 1), torch.tensor([0.1, 0.3, 0.25]).view(3, 1, 1)
    pixels = x * std + mean
    torch.testing.assert_close(pixels, data.x[:12] / 255.0, atol=1e-5, rtol=0)  # the loader's normalisation
    stepped = ((pixels + 0.1 * xa.grad.sign()).clamp(0, 1) - mean) / std
    torch.testing.assert_close(seen[-1], stepped, atol=1e-5, rtol=1e-5)
    assert torch.equal(labels, ref(stepped).argmax(-1))
    moved = (stepped - x).abs()
    assert ((pixels > 0.9) | (pixels < 0.1)).any() and (moved < 0.1 / std - 1e-4).any()  # clipping tested


@pytest.mark.parametrize("bias", [True, False])
def test_boundary_expand_trains_one_new_head_row_toward_the_shadow_class(bias):
    """The shadow output is one new row of the head (a bias entry iff the head has biases):
    one full-batch SGD step of the widened (C + 1)-way head on D_f labelled C, the whole net
    trained, equals the module's step from the same shadow row."""
    data = small_digits()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10, bias=bias))
    forget = torch.arange(0, 200, 5)
    module = BoundaryExpand(net, tiny_task(data, net, forget), **{**PLAIN, "epochs": 1})
    own = {id(p) for p in net.parameters()}
    added = [p for p in module.parameters_to_train() if id(p) not in own]
    assert sorted(tuple(p.shape) for p in added) == ([(1,), (1, 16)] if bias else [(1, 16)])
    row = [p.detach().clone() for p in added]
    wide = copy.deepcopy(net)
    wide[3] = nn.Linear(16, 11, bias=bias)
    with torch.no_grad():
        shadow_w = next(r for r in row if r.ndim == 2)
        wide[3].weight.copy_(torch.cat([net[3].weight, shadow_w]))
        if bias:
            wide[3].bias.copy_(torch.cat([net[3].bias, next(r for r in row if r.ndim == 1)]))
    x, _, _ = next(iter(data.loader(forget, batch_size=len(forget), train=False)))
    want = sgd_reference(wide, lambda m, _: F.cross_entropy(m(x), torch.full((len(x),), 10)), steps=1, lr=0.1)
    fit_tiny(module)
    for k, p in net.named_parameters():
        w = dict(want.named_parameters())[k].detach()
        torch.testing.assert_close(p.detach(), w[:10] if k.startswith("3.") else w, atol=1e-6, rtol=1e-5, msg=k)
    for p in added:  # the shadow row was trained as the widened head's last row
        w = want[3].weight if p.ndim == 2 else want[3].bias
        torch.testing.assert_close(p.detach(), w[10:].detach(), atol=1e-6, rtol=1e-5)
    assert net(x).shape == (len(x), 10)
