"""Every bad setting fails in `pipeline.setup`, before anything trains, with one line that names the
setting the user typed, what is allowed and what was given (issue 14)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from sparse_mu import pipeline
from sparse_mu.config import build
from sparse_mu.errors import ConfigError
from sparse_mu.pruning import Mask, export_published
from sparse_mu.validation import validate, validate_node
from tests.conftest import CONF, TINY, compose_cfg

# override(s) -> the start of the message
CASES = {
    "dataset.epochs=abc": "dataset.epochs must be an integer; got 'abc'",
    "dataset.lr=fast": "dataset.lr must be a number; got 'fast'",
    "dataset.batch_size=32.5": "dataset.batch_size must be an integer; got 32.5",
    "pruner.sparsity=high": "pruner.sparsity must be a number; got 'high'",
    "pruner.layerwise=maybe": "pruner.layerwise must be true or false; got 'maybe'",
    "pruner.layerwise=1": "pruner.layerwise must be true or false; got 1",
    "unlearner.lr=abc": "unlearner.lr must be a number; got 'abc'",
    "unlearner.epochs=2.5": "unlearner.epochs must be an integer; got 2.5",
    "reference.epochs=2.5": "reference.epochs must be an integer; got 2.5",
    "reference.epochs=0": "reference.epochs must be an integer >= 1; got 0",
    "forget.count=1.5": "forget.count must be an integer or null; got 1.5",
    "+unlearner.nosuch=1": "unlearner.nosuch is not a setting of unlearner (sparse_mu.unlearn.ft.FineTune); allowed: ",
    "+nosuch=1": "nosuch is not a setting of the run",
    "+eval.nosuch=1": "eval.nosuch is not a setting of eval",
    "seed=abc": "seed must be an integer in [0, 4294967295]; got 'abc'",
    "seed=-1": "seed must be an integer in [0, 4294967295]; got -1",
    "seed=1.5": "seed must be an integer in [0, 4294967295]; got 1.5",
    "checkpoint_every=abc": "checkpoint_every must be an integer >= 0; got 'abc'",
    "checkpoint_every=-1": "checkpoint_every must be an integer >= 0; got -1",
    "gpu_per_job=2": "gpu_per_job must be true or false; got 2",
    "eval.batch_size=0.5": "eval.batch_size must be an integer >= 1 or null; got 0.5",
    "eval.mia_features=[bogus]": "eval.mia_features must be a list of values, each one of correctness, confidence",
    "eval.retrain_reference=yes": "eval.retrain_reference must be true or false; got 'yes'",
    "fast.compile=sometimes": "fast.compile must be true or false; got 'sometimes'",
    "fast.channels_last=on": "fast.channels_last must be one of true, false, auto; got 'on'",
    "unprune.enabled=1": "unprune.enabled must be true or false; got 1",
    "unprune.finetune_epochs=0": "unprune.finetune_epochs must be an integer >= 1 or null; got 0",
    "paths.cache_dir=[a]": "paths.cache_dir must be a string; got ['a']",
    "trainer.precision=17": "trainer.precision must be one of 64, 32, 16, transformer-engine",
    "trainer.devices=1.5": "trainer.devices must be a list of integers or a string or an integer; got 1.5",
    "+trainer.nosuch=1": "trainer.nosuch is not a setting of trainer (lightning.pytorch.Trainer)",
    "logger=default logger.wandb.offline=maybe": "logger.wandb.offline must be true or false; got 'maybe'",
    "callbacks.progress.lines=x": "callbacks.progress.lines must be an integer; got 'x'",
    "dataset.std=[zero]": "dataset.std must be a list of numbers or null; got ['zero']",
    "dataset.std=[0]": "dataset.std must be positive per-channel standard deviations; got [0]",
    "dataset.flip=1": "dataset.flip must be true or false; got 1",
    "arch.width=3.5": "arch.width must be an integer; got 3.5",
    "forget.class_idx=[a]": "forget.class_idx must be an integer or a list of integers; got ['a']",
    "transfer=linear_probe transfer.probe.lr=x": "transfer.probe.lr must be a number; got 'x'",
    "unlearner=l1_sparse unlearner.gamma=big": "unlearner.gamma must be a number; got 'big'",
    "pruner=imp pruner.rounds=2.0": "pruner.rounds must be an integer or null; got 2.0",
    "pruner=filter_l1 pruner.sparsity=1.0": "pruner.sparsity must be a fraction in [0, 1); got 1.0",
    "pruner=filter_l1 pruner.layerwise=per_layer": "pruner.layerwise must be true or false; got 'per_layer'",
    "pruner=filter_l1 pruner.rewind=later": "pruner.rewind must be one of epoch, init, none; got 'later'",
    "pruner=filter_l1 arch=vit": "arch must be a network of convolutions, linear layers and "
                                                    "BatchNorm for pruner=filter_l1",
    "forget=sequential forget.rounds=0": "forget.rounds must be an integer in [1, 130] (|D_f| = 130",
    "forget=sequential forget.rounds=x": "forget.rounds must be an integer; got 'x'",
    "forget=sequential forget.of=backdoor": "forget.of must be one of class, random; got 'backdoor'",
    "forget=sequential forget.of=class forget.class_idx=10": "forget.class_idx must be an integer in [0, 9]",
    "forget=memorised forget.order=middle": "forget.order must be one of most, least; got 'middle'",
    "forget=memorised forget.fraction=1.5": "forget.fraction must be in (0, 1); got 1.5",
    "forget=memorised pruner=synflow": "forget=memorised ranks D by the trained base model's confidence; pruner=",
}


@pytest.mark.parametrize("overrides", list(CASES))
def test_bad_setting_is_one_line_naming_it_before_training(overrides, tmp_path):
    cfg = compose_cfg([*TINY, *overrides.split()], tmp_path)
    with pytest.raises(ConfigError) as err:
        pipeline.setup(cfg, tmp_path / "out")
    message = str(err.value)
    assert message.startswith(CASES[overrides]), message
    assert "\n" not in message
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_interpolated_value_names_the_setting_it_came_from():
    # unlearner.batch_size: ${train.batch_size} -> ${dataset.batch_size}: the user typed the last
    cfg = compose_cfg(["dataset.batch_size=32.5"])
    with pytest.raises(ConfigError, match=r"^dataset\.batch_size \(used as unlearner\.batch_size\) must be an "
                                          r"integer; got 32\.5$"):
        validate_node(cfg.unlearner, "unlearner")


def _all_options() -> list[list[str]]:
    groups = ("dataset", "arch", "train", "pruner", "unlearner", "forget", "trainer", "logger", "callbacks",
              "transfer", "debug")
    out = [[f"{g}={p.stem}"] for g in groups for p in sorted((CONF / g).glob("*.yaml"))]
    out += [[f"+experiment={p.stem}"] for p in sorted((CONF / "experiment").glob("*.yaml"))]
    return [*out, ["tuning=paper"], ["tuning=budget"], ["tuning=budget_untuned"], ["unlearner@reference=ft"]]


def test_every_shipped_option_and_preset_passes_validation():
    required = {"dataset=npz": ["dataset.path=x.npz"], "dataset=folder": ["dataset.root=x"],
                "pruner=checkpoint": ["pruner.path=x.pt"]}
    for overrides in _all_options():
        validate(compose_cfg([*overrides, *required.get(overrides[0], [])]))


def test_missing_required_setting_names_it():
    with pytest.raises(ConfigError, match=r"^dataset\.path must be set"):
        validate(compose_cfg(["dataset=npz"]))


def _npz(path, y_train, y_test=None, x_dtype=np.uint8, nan=False):
    rng = np.random.default_rng(0)
    x = rng.random((len(y_train), 8, 8)).astype(np.float32) if x_dtype != np.uint8 else \
        rng.integers(0, 255, (len(y_train), 8, 8), dtype=np.uint8)
    if nan:
        x[3, 2, 2] = np.nan
    arrays = {"x_train": x, "y_train": np.asarray(y_train)}
    if y_test is not None:
        arrays |= {"x_test": rng.integers(0, 255, (len(y_test), 8, 8), dtype=np.uint8), "y_test": np.asarray(y_test)}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("kind, message", [
    ("nan pixels", "x_train has 1 NaN or infinite pixel values"),
    ("label gap", "y_train must hold every label 0..3 (4 classes); labels without a training sample: [2]"),
    ("unseen test label", "every y_test label must occur in y_train; test labels absent from training: [3]"),
])
def test_npz_with_unusable_content_is_refused(kind, message, tmp_path):
    path = tmp_path / "d.npz"
    if kind == "nan pixels":
        _npz(path, np.arange(60) % 3, x_dtype=np.float32, nan=True)
    elif kind == "label gap":
        _npz(path, np.array([0, 1, 3] * 20))
    else:
        _npz(path, np.arange(60) % 3, y_test=np.arange(12) % 4)
    cfg = compose_cfg([*TINY, "dataset=npz", f"dataset.path={path}", "dataset.crop_padding=0", "arch=mlp"], tmp_path)
    with pytest.raises(ConfigError, match=re.escape(message)):
        pipeline.setup(cfg, tmp_path / "out")


def test_checkpoint_with_nan_weights_is_refused_at_setup(tmp_path):
    cfg = compose_cfg([])
    net = build(cfg.arch, num_classes=10, in_channels=1, image_size=8)
    state = net.state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    export_published(state, Mask.ones(net), tmp_path / "nan.pth.tar")
    cfg = compose_cfg([*TINY, "pruner=checkpoint", f"pruner.path={tmp_path / 'nan.pth.tar'}"], tmp_path)
    with pytest.raises(ConfigError, match="holds NaN or infinite weights"):
        pipeline.setup(cfg, tmp_path / "out")


def test_online_wandb_without_credentials_falls_back_to_offline(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no entry
    cfg = compose_cfg(["logger=default", "logger.wandb.offline=false"])
    validate(cfg)
    assert cfg.logger.wandb.offline is True
    assert "no W&B credentials" in caplog.text
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password k3y\n")
    cfg = compose_cfg(["logger=default", "logger.wandb.offline=false"])
    validate(cfg)
    assert cfg.logger.wandb.offline is False  # credentials found: stays online
