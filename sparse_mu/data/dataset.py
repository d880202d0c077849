"""A data set in memory with its fixed split, ready to hand out loaders over index sets."""

from __future__ import annotations

from dataclasses import dataclass, field

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


def prepare(source: Source) -> ImageData:
    """Load `source` and split it: (test carved out if missing), then 10 % per class to val."""
    check(0 <= source.val_fraction < 1, "dataset.val_fraction", "in [0, 1)", source.val_fraction)
    check(0 < source.test_fraction < 1, "dataset.test_fraction", "in (0, 1)", source.test_fraction)
    check(source.crop_padding >= 0, "dataset.crop_padding", ">= 0", source.crop_padding)
    raw: ImageArrays = source.load()
    fingerprint = raw.fingerprint()
    x, y = raw.x_train, raw.y_train
    if raw.x_test is None:
        pool, test = stratified_holdout(y, source.test_fraction, source.split_seed)
        x, y = torch.cat([x[pool], x[test]]), torch.cat([y[pool], y[test]])
        n_pool, n_test = len(pool), len(test)
    else:
        n_pool, n_test = len(x), len(raw.x_test)
        x, y = torch.cat([x, raw.x_test]), torch.cat([y, raw.y_test])
    train, val = stratified_holdout(y[:n_pool], source.val_fraction, source.split_seed + 1)
    test = torch.arange(n_pool, n_pool + n_test)
    num_classes = max(len(raw.classes), int(y.max()) + 1)
    classes = raw.classes if len(raw.classes) == num_classes else [str(i) for i in range(num_classes)]
    if source.mean is None or source.std is None:
        pool = x[train].double() / 255
        mean, std = pool.mean((0, 2, 3)).float(), pool.std((0, 2, 3)).float()
    mean = torch.tensor(source.mean, dtype=torch.float32) if source.mean is not None else mean
    std = torch.tensor(source.std, dtype=torch.float32) if source.std is not None else std
    check(len(mean) == len(std) == x.shape[1], "dataset.mean/dataset.std",
          f"lists of {x.shape[1]} per-channel values", (source.mean, source.std))
    return ImageData(
        name=source.name, x=x, y=y, train=train, val=val, test=test, classes=classes, mean=mean,
        std=std, augment=Augment(source.crop_padding, source.flip), fingerprint=fingerprint,
    )
