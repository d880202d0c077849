"""One run's resolved inputs (`Job`): the data, forget set, pruner, cache and device, and how it
builds nets, trains loops and evaluates; the helpers that turn config nodes into plain values."""

from __future__ import annotations

import copy
import dataclasses
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from sparse_mu.cache import (
    ArtifactCache,
)
from sparse_mu.callbacks import LAST, MaskEnforcer, StageTimer, last_checkpoint
from sparse_mu.config import build
from sparse_mu.data import ForgetSet, ForgetSpec, ImageData
from sparse_mu.errors import Diverged, check
from sparse_mu.fast import prepare_net, resolve_channels_last, resolve_precision
from sparse_mu.metrics import (
    accuracy,
    evaluate,
    predict,
)
from sparse_mu.pruning import (
    Mask,
    Pruner,
)
from sparse_mu.unlearn import Unlearner, UnlearnTask

log = logging.getLogger("sparse_mu")

State = dict[str, torch.Tensor]
GROUPS = ("dataset", "arch", "train", "pruner", "unlearner", "forget")
# Settings that change how a loop is run or shown, not what it computes: left out of cache keys.
_OPERATIONAL = {
    "trainer": {"_target_", "accelerator", "enable_progress_bar", "enable_model_summary",
                "enable_checkpointing", "log_every_n_steps", "num_sanity_val_steps",
                "default_root_dir", "benchmark"},
    "dataset": {"root", "download", "path", "workers"},
}


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def _without(node, group: str) -> dict:
    return {k: v for k, v in _plain(node).items() if k not in _OPERATIONAL.get(group, ())}


def _cpu_state(net: nn.Module) -> State:
    """A copy of the weights on the CPU, in the standard layout whatever the net trains in."""
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
            for k, v in net.state_dict().items()}


def choices(cfg: DictConfig) -> dict[str, str]:
    """The option chosen in each config group (class names when run outside Hydra)."""
    if HydraConfig.initialized():
        picked = HydraConfig.get().runtime.choices
        return {g: str(picked.get(g)) for g in GROUPS}
    return {g: cfg[g]["_target_"].rsplit(".", 1)[-1].lower() for g in GROUPS}


def pick_device(cfg: DictConfig) -> torch.device:
    """Where evaluation runs: the GPU when the trainer may use one."""
    accel = str(cfg.trainer.get("accelerator", "auto"))
    if accel in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@dataclass
class Job:
    """One run's inputs, resolved and validated."""

    cfg: DictConfig
    out_dir: Path
    data: ImageData
    forget: ForgetSet
    pruner: Pruner
    cache: ArtifactCache
    device: torch.device
    target: ImageData | None = None  # the transfer target, adapted to the source model's input
    forget_spec: ForgetSpec | None = None  # the setting D_f was drawn by (`forget`)

    @property
    def records_confidence(self) -> bool:
        """Whether the base model records each sample's confidence while it trains: the
        memorisation ranking of forget=memorised (`sparse_mu.data.memorised`)."""
        return self.forget_spec is not None and self.forget_spec.needs_record

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def unlearn_seed(self) -> int:
        """The unlearning seed (loader order, noise of the unlearner): `unlearn_seed`, or `seed`."""
        value = self.cfg.get("unlearn_seed")
        return self.seed if value is None else int(value)

    def reseeded(self, seed: int) -> Job:
        """This job with training seed `seed` (a reference of the store): the config's copy says
        so (keys, `${seed}` interpolations) and the pruner is rebuilt from it."""
        cfg = copy.deepcopy(self.cfg)
        with open_dict(cfg):
            cfg.seed = seed
        return dataclasses.replace(self, cfg=cfg, pruner=build(cfg.pruner))

    @property
    def precision(self) -> str:
        """The trainer's precision, resolved (never `auto`)."""
        return str(self.cfg.trainer.precision)

    @property
    def eval_batch_size(self) -> int:
        """eval.batch_size, or by device: CPU inference is fastest with small batches."""
        return int(self.cfg.eval.batch_size or (1024 if self.device.type == "cuda" else 128))

    def make_net(self) -> nn.Module:
        """The architecture, initialised from the job's seed (the same init every time).

        `net.input_shape` is the data's (C, H, W): data-free pruners (SynFlow) need it and get
        nothing else from the data.
        """
        torch.manual_seed(self.seed)
        c, size = self.data.in_channels, self.data.image_size
        net = build(self.cfg.arch, num_classes=self.data.num_classes, in_channels=c, image_size=size)
        net.input_shape = (c, size, size)
        return prepare_net(net, bool(self.cfg.fast.channels_last))

    def fit(self, module: L.LightningModule, stage: str, mask: Mask | None, logger: Logger | bool,
            ckpt_dir: Path | None = None) -> float:
        """Train `module` with the configured trainer and callbacks; returns the loop's seconds.

        The mask-enforcing callback is attached whenever there is a mask. With `ckpt_dir`, the
        loop saves `last.ckpt` there every `checkpoint_every` epochs and resumes from it. With
        `fast.compile`, the net's forward is compiled in place (its state_dict keys unchanged).
        """
        timer = StageTimer()
        callbacks = [build(c) for c in self.cfg.callbacks.values() if c is not None]
        callbacks.append(timer)
        if mask is not None:
            callbacks.append(MaskEnforcer(mask))
        resume = None
        every = int(self.cfg.checkpoint_every)
        saving = ckpt_dir is not None and every > 0
        if saving:
            callbacks.append(last_checkpoint(ckpt_dir, every))
            resume = ckpt_dir / LAST if (ckpt_dir / LAST).is_file() else None
        trainer = build(self.cfg.trainer, max_epochs=module.epochs, callbacks=callbacks, logger=logger,
                        enable_checkpointing=saving)  # Lightning refuses a ModelCheckpoint otherwise
        if self.cfg.fast.compile:
            module.net.compile()
        module.stage = stage
        trainer.fit(module, ckpt_path=resume, weights_only=True)
        return timer.seconds

    def train_profile(self, net: nn.Module, indices: torch.Tensor | None = None,
                      epochs: int | None = None, record: bool = False) -> L.LightningModule:
        """The training profile on `indices` (default D), for `epochs` (default the profile's),
        recording each sample's confidence if `record`."""
        # no later stage rewinds to a snapshot of such a run, and the profile's rewind epoch may
        # lie beyond a short schedule
        extra = {"epochs": epochs, "rewind_epoch": 0} if epochs is not None else {}
        extra |= {"record": True} if record else {}
        return build(self.cfg.train, net=net, data=self.data, indices=self.data.train if indices is None else indices,
                     seed=self.seed, **extra)

    def unlearner(self, node: DictConfig, net: nn.Module, task: UnlearnTask, seed: int | None = None) -> Unlearner:
        """`node` built on `net`; `seed` (default the training seed) drives its randomness."""
        return build(node, net=net, task=task, seed=self.seed if seed is None else seed,
                     node=node._key())  # messages name the node

    def outputs(self, net: nn.Module, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax outputs and labels of `net` on `indices`, eval transforms."""
        loader = self.data.loader(indices, batch_size=self.eval_batch_size, train=False, device=self.device)
        return predict(net.to(self.device), loader, self.precision)

    def quick_accuracy(self, net: nn.Module) -> dict:
        """Accuracy on D, validation and test: how well a trained model fits."""
        parts = (("train_acc", self.data.train), ("val_acc", self.data.val), ("test_acc", self.data.test))
        return {name: accuracy(*self.outputs(net, idx)) for name, idx in parts}

    def metrics(self, net: nn.Module) -> dict:
        if not all(torch.isfinite(t).all() for t in net.state_dict().values() if t.is_floating_point()):
            raise Diverged("the model to evaluate has non-finite weights: a stage diverged; lower its "
                           "learning rate or step size (e.g. unlearner.lr, unlearner.alpha)")
        ev = self.cfg.eval
        return evaluate(net, self.data, self.forget, seed=self.seed, batch_size=self.eval_batch_size,
                        device=self.device, mia_features=tuple(ev.mia_features), privacy=bool(ev.mia_privacy),
                        precision=self.precision)

    def net_with(self, state: State) -> nn.Module:
        net = self.make_net()
        net.load_state_dict(state)
        return net


def resolve_speed_settings(cfg: DictConfig, device: torch.device) -> None:
    """Replace `auto` in `trainer.precision` and `fast.*` by what `device` gets, in place, so the
    saved config and the cache keys hold the values actually used."""
    check(cfg.fast.compile in (True, False), "fast.compile", "true or false", cfg.fast.compile)
    with open_dict(cfg):
        cfg.trainer.precision = resolve_precision(cfg.trainer.precision, device)
        cfg.fast.channels_last = resolve_channels_last(cfg.fast.channels_last)
        if cfg.trainer.get("benchmark") is None:
            cfg.trainer.benchmark = not cfg.trainer.get("deterministic")
