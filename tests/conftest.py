"""Shared fixtures: compose configs with Hydra's compose API; tiny, fast settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "sparse_mu" / "conf"
CIFAR_SMALL = ROOT.parent / "shared" / "data" / "cifar10_small.npz"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# One intra-op thread (also for the CLI tests' subprocesses): the tests' tensors are tiny, and on a
# shared 2-core machine OpenMP threads waiting for each other made them up to 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# imported after the thread setting: tests.tiny imports torch, which reads OMP_NUM_THREADS once
from tests.tiny import mlp, random_forget, small_digits, trained  # noqa: E402

# Short schedules: seconds per run on two CPU cores, still long enough to fit digits.
TINY = [
    "train.epochs=6", "train.rewind_epoch=1", "unlearner.epochs=2", "reference.epochs=6",
    "logger=csv", "callbacks.progress.interactive=false",
    "++unlearner.budget=null",  # run `unlearner.epochs` (tests/test_cost.py covers the budget)
]


def compose_cfg(overrides: list[str], tmp: Path | None = None) -> DictConfig:
    """The run config with `overrides`; cache and outputs under `tmp` if given."""
    extra = [f"paths.cache_dir={tmp / 'cache'}", f"paths.output_dir={tmp / 'out'}"] if tmp else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="run", overrides=[*extra, *overrides])


@pytest.fixture
def tiny_cfg(tmp_path):
    """compose(*overrides) with the TINY settings, cache and outputs in tmp_path."""
    return lambda *overrides: compose_cfg([*TINY, *overrides], tmp_path)


# The algorithm tests' tiny data (tests/tiny.py): 300 digits, a random forget set, and an MLP that
# has memorised all of D; module-scoped, so each test file builds them once.
@pytest.fixture(scope="module")
def data():
    return small_digits()


@pytest.fixture(scope="module")
def fs(data):
    return random_forget(data)


@pytest.fixture(scope="module")
def memorised(data):
    """An MLP fitted to all of D (forget and retain samples): 100 % accuracy on both, yet not so
    confident that the gradients vanish."""
    return trained(data, data.train, mlp(), steps=60)
