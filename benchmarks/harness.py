"""What the benchmarks share: the checkout on the import path, the machine's description,
synthetic data, configs composed like run.py's, and timing statistics.

Imported before `sparse_mu` by every benchmark, so `python benchmarks/<name>.py` works from a
checkout that is not pip-installed. The checkout is appended to the path, not prepended: a
PYTHONPATH naming another copy of the code (an older commit, for a before/after comparison) wins.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
CIFAR_SMALL = ROOT.parent / "shared" / "data" / "cifar10_small.npz"


def cpu_model() -> str:
    """The CPU's model name as lscpu reports it (platform's answer where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return fields.get("Model name", platform.machine()).strip()


def machine(device: torch.device) -> str:
    """One line: the device, CPU model and cores, torch version and intra-op threads."""
    gpu = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
    return (f"{gpu}CPU {cpu_model()} ({os.cpu_count()} cores), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def conf_dir() -> Path:
    """The sparse_mu/conf/ folder of the sparse_mu being benchmarked (PYTHONPATH may name another copy)."""
    import sparse_mu

    return Path(sparse_mu.__file__).resolve().parent / "conf"


def compose(overrides: list[str]):
    """The run config with `overrides`, composed as `python run.py` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="run", overrides=overrides)


def synthetic_npz(path: Path, n_train: int, n_test: int, size: int = 32, channels: int = 3,
                  classes: int = 10, seed: int = 0) -> Path:
    """A CIFAR-shaped .npz of random uint8 images and labels (for timing, not accuracy)."""
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, size, size, channels), dtype=np.uint8),
             y_train=rng.integers(0, classes, n_train), x_test=rng.integers(0, 256, (n_test, size, size, channels),
                                                                           dtype=np.uint8),
             y_test=rng.integers(0, classes, n_test))
    return path


def median(values: list[float]) -> float:
    return statistics.median(values)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


class PeakRSS:
    """Peak resident memory (MB) of this process during a block, and how far it rose over the
    memory held when the block began. Linux: the kernel's high-water mark is reset on entry
    (/proc/self/clear_refs), so successive blocks are measured separately. DataLoader workers
    are processes of their own and not counted."""

    def __enter__(self) -> PeakRSS:
        self.start = _status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return self

    def __exit__(self, *exc) -> None:
        self.peak = _status_mb("VmHWM")
        self.rise = self.peak - self.start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
