"""Image-folder data sets (any ImageFolder tree, ImageNet, Tiny-ImageNet) streamed from disk by
DataLoader workers.

`FolderData` has the interface of the in-memory `ImageData` that the pipeline uses (index sets,
labels, `loader(indices, ...)` yielding `(x, y, idx)`), with the same split rules
(`sparse_mu.data.dataset.split`): the official train folder, then the official validation
folder (`test_dir`: val for ImageNet, test for `dataset=folder`) as the test set; 10 % of every
train class held out for validation.
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, find_classes, make_dataset

from sparse_mu.data.dataset import split
from sparse_mu.data.loader import EpochSampler
from sparse_mu.data.sources import Source
from sparse_mu.errors import ConfigError, check

Sample = tuple[str, int]
TRAIN_CROPS = ("random_resized", "padded")


def _tiny_val(val: Path, class_to_idx: dict[str, int]) -> list[Sample]:
    """Tiny-ImageNet's validation set: val/images/*.JPEG, labels in val/val_annotations.txt."""
    samples = []
    for line in (val / "val_annotations.txt").read_text().splitlines():
        if not line.strip():
            continue
        name, wnid = line.split("\t")[:2]
        if wnid not in class_to_idx:
            raise ConfigError(f"{val / 'val_annotations.txt'} labels {name} with {wnid}, which is not a train class")
        samples.append((str(val / "images" / name), class_to_idx[wnid]))
    return sorted(samples)


def scan(root: Path, test_dir: str = "val") -> tuple[list[str], list[Sample], list[Sample] | None]:
    """(classes, train samples, test samples or None) of an ImageFolder tree.

    root/train/<class>/**/<image>; the test set is root/<test_dir>/<class>/<image> (ImageNet after
    the usual val preparation, any ImageFolder tree's test/) or root/<test_dir>/images +
    val_annotations.txt (Tiny-ImageNet); without that folder there is none.
    """
    train = root / "train"
    if not train.is_dir():
        raise ConfigError(f"dataset.root={str(root)!r} must hold train/<class>/<image> folders; {train} does not exist")
    try:
        classes, class_to_idx = find_classes(str(train))
        train_samples = make_dataset(str(train), class_to_idx, extensions=IMG_EXTENSIONS)
        val = root / test_dir
        if (val / "val_annotations.txt").is_file():
            test_samples = _tiny_val(val, class_to_idx)
        elif val.is_dir():
            test_samples = make_dataset(str(val), class_to_idx, extensions=IMG_EXTENSIONS)
        else:
            test_samples = None
    except FileNotFoundError as e:  # torchvision's "found no valid file for the classes ..."
        raise ConfigError(f"dataset.root={str(root)!r}: {e}") from None
    return classes, train_samples, test_samples


def fingerprint(root: Path, samples: list[Sample]) -> str:
    """Hash of the sorted (relative path, size, label) list: follows the files, not their path."""
    h = hashlib.blake2b(digest_size=16)
    for path, label in sorted(samples):
        h.update(f"{os.path.relpath(path, root)}\0{os.path.getsize(path)}\0{label}\n".encode())
    return h.hexdigest()


def usable_cpus() -> int:
    """The CPU cores this process may run on (the most DataLoader workers that help)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Images(torch.utils.data.Dataset):
    """Position i -> (transformed image, label, data set index) of the i-th entry of `indices`."""

    def __init__(self, samples: list[Sample], indices: torch.Tensor, transform):
        self.samples, self.indices, self.transform = samples, indices.tolist(), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = self.indices[i]
        path, label = self.samples[j]
        return self.transform(default_loader(path)), label, j


class FolderLoader:
    """Batches of `indices` decoded by DataLoader workers, moved to `device`.

    The order comes from an `EpochSampler` (seeded per epoch; Lightning calls its `set_epoch`);
    the workers' augmentation randomness from a generator seeded with `seed`.
    """

    def __init__(self, samples: list[Sample], indices: torch.Tensor, *, batch_size: int, shuffle: bool,
                 transform, seed: int, workers: int, device: str | torch.device):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.sampler = EpochSampler(len(indices), shuffle, seed)
        workers = min(workers, usable_cpus())  # more only slow it down (and make torch warn)
        self.loader = torch.utils.data.DataLoader(
            _Images(samples, indices, transform), batch_size=batch_size, sampler=self.sampler,
            num_workers=workers, pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.loader.num_workers:
            # Forked workers inherit the parent's uncollected garbage; an earlier loader's
            # iterator among it, collected in a worker, prints "can only test a child process".
            gc.collect()
        for x, y, idx in self.loader:
            yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                   idx.to(self.device, non_blocking=True))


@dataclass
class FolderData:
    """A split image-folder data set; `samples[i]` is the (path, label) of data set index i."""

    name: str
    samples: list[Sample]
    y: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    classes: list[str]
    image_size: int
    fingerprint: str
    train_transform: T.Compose
    eval_transform: T.Compose
    workers: int

    in_channels = 3  # images are decoded as RGB

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def loader(self, indices: torch.Tensor, *, batch_size: int, train: bool, seed: int = 0,
               device: str | torch.device = "cpu") -> FolderLoader:
        """Shuffled and augmented batches if `train`, else in order with eval transforms."""
        return FolderLoader(self.samples, indices.cpu(), batch_size=batch_size, shuffle=train,
                            transform=self.train_transform if train else self.eval_transform,
                            seed=seed, workers=self.workers, device=device)


@dataclass
class Folder(Source):
    """An ImageFolder tree under `root` (see `scan`), decoded on the fly.

    Training: `train_crop: random_resized` (RandomResizedCrop to `image_size`, ImageNet) or
    `padded` (a random `image_size` crop of the image padded by `crop_padding`, Tiny-ImageNet's
    64x64), then a horizontal flip if `flip`. Evaluation: resize the short side to `resize` (null:
    keep) and centre-crop `image_size`; `padded` training crops resize the same way first.
    `mean`/`std` are required. `test_dir`: the subfolder of the test set (see `scan`). `workers` DataLoader processes
    decode images (persistent across epochs).
    """

    name: str = "imagenet"
    root: str = "data/imagenet"
    image_size: int = 224
    resize: int | None = 256
    train_crop: str = "random_resized"
    workers: int = 8
    test_dir: str = "val"

    def transforms(self) -> tuple[T.Compose, T.Compose]:
        normalise = [T.ToTensor(), T.Normalize(self.mean, self.std)]
        resize = [T.Resize(self.resize)] if self.resize else []
        if self.train_crop == "random_resized":
            crop = [T.RandomResizedCrop(self.image_size)]
        else:
            crop = [*resize, T.RandomCrop(self.image_size, padding=self.crop_padding or None, pad_if_needed=True)]
        train = crop + ([T.RandomHorizontalFlip()] if self.flip else []) + normalise
        evaluate = resize + [T.CenterCrop(self.image_size)] + normalise
        return T.Compose(train), T.Compose(evaluate)

    def prepare(self) -> FolderData:
        check(self.train_crop in TRAIN_CROPS, "dataset.train_crop", f"one of {', '.join(TRAIN_CROPS)}", self.train_crop)
        check(self.image_size >= 1, "dataset.image_size", "an integer >= 1", self.image_size)
        check(self.crop_padding >= 0, "dataset.crop_padding", ">= 0", self.crop_padding)
        check(self.workers >= 0, "dataset.workers", ">= 0", self.workers)
        check(self.mean is not None and self.std is not None and len(self.mean) == len(self.std) == 3,
              "dataset.mean/dataset.std", "lists of 3 per-channel values for a folder data set", (self.mean, self.std))
        check(bool(self.root), "dataset.root", "the folder holding train/<class>/<image>", self.root)
        root = Path(self.root).expanduser()
        classes, train, test = scan(root, self.test_dir)
        y_train = torch.tensor([label for _, label in train], dtype=torch.long)
        y_test = torch.tensor([label for _, label in test], dtype=torch.long) if test is not None else None
        order, y, train_idx, val_idx, test_idx = split(self, y_train, y_test)
        samples = [train[i] for i in order.tolist()] if order is not None else train + test
        train_tf, eval_tf = self.transforms()
        return FolderData(
            name=self.name, samples=samples, y=y, train=train_idx, val=val_idx, test=test_idx, classes=classes,
            image_size=self.image_size, fingerprint=fingerprint(root, samples), train_transform=train_tf,
            eval_transform=eval_tf, workers=self.workers)
