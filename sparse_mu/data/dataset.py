"""A data set in memory with its fixed split, ready to hand out loaders over index sets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import torch

from sparse_mu.data.loader import Augment, TensorLoader
from sparse_mu.data.sources import ImageArrays, Source
from sparse_mu.data.split import stratified_holdout
from sparse_mu.errors import check


@dataclass
class ImageData:
    """All images of a data set in one uint8 tensor; `train`, `val`, `test` index into it.

    `train` is D, the set models are trained on (forget sets are drawn from it); `val` is 10 %
    of every class of the official train set; `test` is the official test set (or a fixed
    stratified part of the pool when the data set has none).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    augment: Augment
    fingerprint: str
    _on_device: dict = field(default_factory=dict, repr=False)

    def derived(self, recipe: dict, **changes) -> ImageData:
        """A copy with `changes` (e.g. relabelled or poisoned tensors) whose fingerprint covers
        `recipe`, so models trained on it are cached apart from this data set's."""
        text = json.dumps({"data": self.fingerprint, **recipe}, sort_keys=True)
        fingerprint = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        return replace(self, **changes, fingerprint=fingerprint, _on_device={})

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.x.shape[-1]

    def on(self, device: torch.device):
        """(images, labels, scale, shift) on `device`; normalised = images * scale + shift."""
        key = str(device)
        if key not in self._on_device:
            scale = (1.0 / (255.0 * self.std)).view(1, -1, 1, 1)
            shift = (-self.mean / self.std).view(1, -1, 1, 1)
            self._on_device[key] = tuple(t.to(device) for t in (self.x, self.y, scale, shift))
        return self._on_device[key]

    def loader(self, indices: torch.Tensor, *, batch_size: int, train: bool, seed: int = 0,
               device: str | torch.device = "cpu") -> TensorLoader:
        """Shuffled and augmented batches if `train`, else in order with eval transforms."""
        return TensorLoader(self, indices, batch_size=batch_size, shuffle=train,
                            augment=self.augment if train else None, seed=seed, device=device)


def split(source: Source, y_train: torch.Tensor, y_test: torch.Tensor | None
          ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed split: (order, y, train, val, test).

    Samples are the official train set followed by the official test set; without a test set, a
    stratified `test_fraction` of the train set becomes one and `order` (else None) is the
    permutation that puts it last. `y` are the labels in the final order; `val` is
    `val_fraction` of every class of the rest, `train` (D) what remains.
    """
    check(0 <= source.val_fraction < 1, "dataset.val_fraction", "in [0, 1)", source.val_fraction)
    check(0 < source.test_fraction < 1, "dataset.test_fraction", "in (0, 1)", source.test_fraction)
    if y_test is None:
        pool, held = stratified_holdout(y_train, source.test_fraction, source.split_seed)
        order, y, n_pool = torch.cat([pool, held]), y_train[torch.cat([pool, held])], len(pool)
    else:
        order, y, n_pool = None, torch.cat([y_train, y_test]), len(y_train)
    train, val = stratified_holdout(y[:n_pool], source.val_fraction, source.split_seed + 1)
    return order, y, train, val, torch.arange(n_pool, len(y))


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of uint8 images on the 0-1 scale, accumulated in
    float64 over chunks of images: a float64 copy of the whole set would need 8x its memory."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in x.split(chunk):
        part = part.double()
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    n = x.numel() // x.shape[1]
    mean = total / n
    var = (squares - n * mean.square()) / max(n - 1, 1)
    return (mean / 255).float(), (var.clamp_min(0).sqrt() / 255).float()


def prepare(source: Source) -> ImageData:
    """Load `source` and split it (`split`); folder data sets stream from disk (`FolderData`)."""
    if hasattr(source, "prepare"):  # folder data sets (sparse_mu.data.folder) split themselves
        return source.prepare()
    check(source.crop_padding >= 0, "dataset.crop_padding", ">= 0", source.crop_padding)
    raw: ImageArrays = source.load()
    fingerprint = raw.fingerprint()
    order, y, train, val, test = split(source, raw.y_train, raw.y_test)
    x = raw.x_train[order] if order is not None else torch.cat([raw.x_train, raw.x_test])
    num_classes = max(len(raw.classes), int(y.max()) + 1)
    classes = raw.classes if len(raw.classes) == num_classes else [str(i) for i in range(num_classes)]
    if source.mean is None or source.std is None:
        mean, std = channel_stats(x[train])
    mean = torch.tensor(source.mean, dtype=torch.float32) if source.mean is not None else mean
    std = torch.tensor(source.std, dtype=torch.float32) if source.std is not None else std
    check(len(mean) == len(std) == x.shape[1], "dataset.mean/dataset.std",
          f"lists of {x.shape[1]} per-channel values", (source.mean, source.std))
    check(bool((std > 0).all()) and bool(torch.isfinite(std).all()), "dataset.std",
          "positive per-channel standard deviations", source.std if source.std is not None else std.tolist())
    check(bool(torch.isfinite(mean).all()), "dataset.mean", "finite per-channel means", source.mean)
    return ImageData(
        name=source.name, x=x, y=y, train=train, val=val, test=test, classes=classes, mean=mean,
        std=std, augment=Augment(source.crop_padding, source.flip), fingerprint=fingerprint,
    )
