"""Where images come from: each source returns uint8 NCHW arrays plus labels.

Sources are Hydra targets (`sparse_mu/conf/dataset/*.yaml`). `load()` returns an `ImageArrays`; the
split into train/validation/test and everything after it is in `sparse_mu.data.dataset`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparse_mu.errors import ConfigError


@dataclass
class ImageArrays:
    """Raw images (uint8, N x C x H x W) and int64 labels; `x_test` is None without a test split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    classes: list[str]

    def fingerprint(self) -> str:
        """Content hash of the arrays, so cached models follow the data, not its path."""
        h = hashlib.blake2b(digest_size=16)
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            if t is not None:
                h.update(str(tuple(t.shape)).encode())
                h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


@dataclass
class Source:
    """Settings shared by every data set.

    `mean`/`std` normalise channels (None: computed from the training images); `crop_padding`
    and `flip` are the training augmentation; `val_fraction` of every class of the official
    train set is held out for validation, and data sets without a test split first lose a
    stratified `test_fraction` to it. `epochs`, `rewind_epoch`, `batch_size` and `lr` are the
    training defaults for this data set (the paper's, where it has them), read by the `train`
    profiles.
    """

    name: str
    mean: list[float] | None = None
    std: list[float] | None = None
    crop_padding: int = 0
    flip: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    epochs: int = 182
    rewind_epoch: int = 8
    batch_size: int = 256
    lr: float = 0.1

    def load(self) -> ImageArrays:
        raise NotImplementedError


@dataclass
class Digits(Source):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images): works offline, anywhere."""

    name: str = "digits"

    def load(self) -> ImageArrays:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        return ImageArrays(
            torch.from_numpy(x), torch.from_numpy(d.target.astype(np.int64)), None, None,
            [str(c) for c in d.target_names],
        )


_TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN"}


@dataclass
class Torchvision(Source):
    """CIFAR-10, CIFAR-100 or SVHN through torchvision (downloaded only if `download`)."""

    name: str = "cifar10"
    root: str = "data"
    download: bool = False

    def load(self) -> ImageArrays:
        from torchvision import datasets

        if self.name not in _TORCHVISION:
            raise ConfigError(f"dataset.name must be one of {sorted(_TORCHVISION)}; got {self.name!r}")
        cls = getattr(datasets, _TORCHVISION[self.name])
        try:
            if self.name == "svhn":
                parts = [cls(self.root, split=s, download=self.download) for s in ("train", "test")]
                xs = [p.data for p in parts]  # already N x C x H x W
                ys = [np.asarray(p.labels) for p in parts]
                classes = [str(i) for i in range(10)]
            else:
                parts = [cls(self.root, train=t, download=self.download) for t in (True, False)]
                xs = [p.data.transpose(0, 3, 1, 2) for p in parts]
                ys = [np.asarray(p.targets) for p in parts]
                classes = list(parts[0].classes)
        except RuntimeError as e:
            raise ConfigError(
                f"dataset.root={self.root!r} does not hold {self.name} ({e}). Set dataset.download=true "
                f"to fetch it, or point dataset.root at a folder that has it."
            ) from None
        t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (xs[0], ys[0], xs[1], ys[1])]
        return ImageArrays(t[0], t[1].long(), t[2], t[3].long(), classes)


# A clone's root (above the package; not for an installed package): relative data paths that are
# not found from the working directory are looked up from here, as the README's commands assume.
REPO = Path(__file__).resolve().parents[2]
SHARED_HINT = ("; dataset=cifar10_small reads the offline CIFAR-10 subset cifar10_small.npz from "
               "../shared/data beside the repository: put it there or set SPARSE_MU_SHARED_DATA to its folder")


def _places(path: str) -> list[Path]:
    """Where a data file named `path` may be: as given (from the working directory), and, if
    relative and this is a clone, from the repository's root."""
    given = Path(path).expanduser()
    if given.is_absolute() or not (REPO / "pyproject.toml").is_file():
        return [given]
    return [given, REPO / given]


@dataclass
class Npz(Source):
    """Any `.npz` with `x_train, y_train` (and optionally `x_test, y_test`, `classes`).

    Images may be N x H x W (grey), N x H x W x C or N x C x H x W, uint8 0-255 or float 0-1.
    """

    name: str = "npz"
    path: str = ""

    def load(self) -> ImageArrays:
        places = _places(self.path)
        path = next((p for p in places if p.is_file()), None)
        if not self.path or path is None:
            hint = SHARED_HINT if Path(self.path).name == "cifar10_small.npz" else ""
            raise ConfigError(f"dataset.path must name an existing .npz file; got {self.path!r} (looked for "
                              f"{' and '.join(str(p.resolve()) for p in places)}){hint}")
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except Exception as e:  # zipfile/pickle/format errors all mean "not a usable npz"
            raise ConfigError(f"dataset.path={self.path!r} is not a readable .npz file ({e})") from None
        missing = [k for k in ("x_train", "y_train") if k not in arrays]
        if ("x_test" in arrays) != ("y_test" in arrays):
            missing.append("y_test" if "x_test" in arrays else "x_test")
        if missing:
            raise ConfigError(
                f"dataset.path={self.path!r} lacks {missing}; an npz data set needs x_train, y_train "
                f"and optionally x_test, y_test (found {sorted(arrays)})"
            )
        x_tr, y_tr = _images(arrays["x_train"], "x_train", self.path), _labels(arrays["y_train"], "y_train", self.path)
        x_te = _images(arrays["x_test"], "x_test", self.path) if "x_test" in arrays else None
        y_te = _labels(arrays["y_test"], "y_test", self.path) if "y_test" in arrays else None
        for x, y, k in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
            if x is not None and len(x) != len(y):
                raise ConfigError(f"dataset.path={self.path!r}: x_{k} has {len(x)} images but y_{k} has {len(y)} labels")
        if x_te is not None and x_te.shape[1:] != x_tr.shape[1:]:
            raise ConfigError(f"dataset.path={self.path!r}: x_test images {tuple(x_te.shape[1:])} differ from x_train {tuple(x_tr.shape[1:])}")
        n_cls = int(max(y_tr.max(), y_te.max() if y_te is not None else 0)) + 1
        classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(n_cls)]
        _check_classes(y_tr, y_te, len(classes), self.path)
        return ImageArrays(x_tr, y_tr, x_te, y_te, classes)


def _images(a: np.ndarray, key: str, path: str) -> torch.Tensor:
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ConfigError(f"dataset.path={path!r}: {key} must have 3 or 4 dimensions (N,H,W[,C]); got shape {a.shape}")
    if a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise ConfigError(f"dataset.path={path!r}: {key} has {int((~np.isfinite(a)).sum())} NaN or infinite "
                              "pixel values; images must be uint8 (0-255) or finite floats in [0, 1]")
        if not np.issubdtype(a.dtype, np.floating) or a.min() < 0 or a.max() > 1:
            raise ConfigError(f"dataset.path={path!r}: {key} must be uint8 (0-255) or float in [0, 1]; got {a.dtype}")
        a = np.round(a * 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(a))


def _labels(a: np.ndarray, key: str, path: str) -> torch.Tensor:
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or (len(a) and a.min() < 0):
        raise ConfigError(f"dataset.path={path!r}: {key} must be a 1-D array of non-negative integer labels; got {a.dtype} {a.shape}")
    return torch.from_numpy(a.astype(np.int64))


def _check_classes(y_train: torch.Tensor, y_test: torch.Tensor | None, n_classes: int, path: str) -> None:
    """Labels must be 0..K-1 with every class in the training set, and the test labels among them:
    a gap would silently add a class no model ever sees."""
    present = set(y_train.unique().tolist())
    if y_test is not None:
        unseen = sorted(set(y_test.unique().tolist()) - present)
        if unseen:
            raise ConfigError(f"dataset.path={path!r}: every y_test label must occur in y_train; "
                              f"test labels absent from training: {unseen[:10]}")
    absent = sorted(set(range(n_classes)) - present)
    beyond = sorted(c for c in present if c >= n_classes)
    if absent or beyond:
        raise ConfigError(f"dataset.path={path!r}: y_train must hold every label 0..{n_classes - 1} ({n_classes} classes); "
                          f"labels without a training sample: {absent[:10]}" + (f", beyond the classes: {beyond[:10]}" if beyond else ""))
