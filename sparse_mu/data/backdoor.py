"""Backdoor forgetting: BadNets poisoning of D, and the poisoned samples as the forget set."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from sparse_mu.data.dataset import ImageData
from sparse_mu.data.forget import ForgetSet, ForgetSpec, _make, seeded_subset
from sparse_mu.errors import check


@dataclass
class BackdoorForget(ForgetSpec):
    """BadNets (Gu et al.): a square trigger of `trigger_size` pixels with value `trigger_value`
    (0-255, every channel; 0 is black), `trigger_offset` pixels from the bottom-right corner, is
    stamped on a seeded `ratio` of D whose labels become `target_class`. Every model of the run
    (the Trojan base model, the pruned model, Retrain) trains on the poisoned D; D_f is the
    poisoned samples.

    The trigger is stamped on the stored uint8 images, so training augmentation (crop, flip)
    and normalisation come after it, as when a poisoned data set is handed to a training script.
    """

    target_class: int = 0
    ratio: float = 0.1
    trigger_size: int = 4
    trigger_offset: int = 2
    trigger_value: int = 0
    seed: int = 0

    def __post_init__(self):
        check(isinstance(self.ratio, (int, float)) and 0 < self.ratio < 1, "forget.ratio",
              "the poisoned fraction of D, in (0, 1)", self.ratio)
        check(isinstance(self.trigger_size, int) and self.trigger_size >= 1, "forget.trigger_size",
              "an integer >= 1 (pixels)", self.trigger_size)
        check(isinstance(self.trigger_offset, int) and self.trigger_offset >= 0, "forget.trigger_offset",
              "an integer >= 0 (pixels from the bottom-right corner)", self.trigger_offset)
        check(isinstance(self.trigger_value, int) and 0 <= self.trigger_value <= 255, "forget.trigger_value",
              "a pixel value in [0, 255] (0 = black)", self.trigger_value)

    def settings(self) -> dict:
        return asdict(self)

    def validate(self, data: ImageData) -> None:
        """Raise ConfigError unless the trigger fits the images and the target class exists."""
        check(isinstance(data, ImageData), "forget", "class or random for a folder data set "
              "(backdoor poisoning needs an in-memory data set)", "backdoor")
        n, h, w = data.num_classes, *data.x.shape[-2:]
        check(isinstance(self.target_class, int) and 0 <= self.target_class < n, "forget.target_class",
              f"an integer in [0, {n - 1}] for {data.name}", self.target_class)
        fits = min(h, w) - self.trigger_offset
        check(self.trigger_size <= fits, "forget.trigger_size",
              f"at most {fits} so that the trigger, {self.trigger_offset} px from the corner, fits the "
              f"{h}x{w} images of {data.name}", self.trigger_size)

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of the uint8 images `x` (N x C x H x W) with the trigger."""
        h, w = x.shape[-2:]
        s, o = self.trigger_size, self.trigger_offset
        out = x.clone()
        out[..., h - o - s:h - o, w - o - s:w - o] = self.trigger_value
        return out

    def poisoned(self, data: ImageData) -> torch.Tensor:
        """Dataset indices of the poisoned samples: a seeded `ratio` of D, all classes."""
        return seeded_subset(data, self.ratio, None, self.seed).sort().values

    def training_data(self, data: ImageData) -> ImageData:
        """`data` with the trigger on the poisoned samples and their labels set to the target.

        The fingerprint covers the poisoning, so the Trojan models are cached apart from the
        clean ones.
        """
        self.validate(data)
        idx = self.poisoned(data)
        x, y = data.x.clone(), data.y.clone()
        x[idx] = self.stamp(data.x[idx])
        y[idx] = self.target_class
        return data.derived({"backdoor": self.settings()}, x=x, y=y)

    def select(self, data: ImageData) -> ForgetSet:
        """D_f = the poisoned samples (of `training_data(data)`)."""
        return _make("backdoor", data, self.poisoned(data), backdoor=self)

    def triggered_test(self, data: ImageData) -> ImageData:
        """The test images with the trigger and their true labels; its `test` is all of them."""
        n = len(data.test)
        empty = torch.empty(0, dtype=torch.long)
        return replace(data, x=self.stamp(data.x[data.test]), y=data.y[data.test], train=empty, val=empty,
                       test=torch.arange(n), _on_device={})
