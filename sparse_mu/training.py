"""The shared training loop of every stage, and the base-model training profile.

`TrainLoop` is the LightningModule base that the base model, the pruners' retraining and every
unlearner share: a net, flat optimiser/schedule settings (`lr`, `momentum`, `weight_decay`,
`optimizer`, `schedule`, ...), `epochs` and `batch_size`. `Classifier` is a training profile
(config group `train`): supervised training of the net on a set of samples.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from sparse_mu.data import ImageData
from sparse_mu.errors import Diverged, check
from sparse_mu.fast import optimizer_kernel
from sparse_mu.optim import SAM

OPTIMIZERS = ("sgd", "adam", "adamw", "sam")
SCHEDULES = ("constant", "step", "cosine")


class TrainLoop(L.LightningModule):
    """A net trained for `epochs` with a standard optimiser and an epoch-wise LR schedule.

    `schedule`: constant; step (x `gamma` at each fraction of training in `milestones`, the
    paper's 50 % / 75 %); cosine (to zero). `warmup_epochs` ramps the LR up linearly first.
    `optimizer: sam` is SGD (with `momentum`, `weight_decay`) wrapped in SAM with radius `rho`,
    adaptive (ASAM) if `adaptive`; `rho` and `adaptive` are ignored by the other optimisers.
    Subclasses define `train_dataloader` and `training_step`.
    """

    def __init__(self, net: nn.Module, *, epochs: int, batch_size: int, lr: float,
                 momentum: float = 0.9, weight_decay: float = 5e-4, optimizer: str = "sgd",
                 schedule: str = "constant", milestones: tuple[float, ...] = (0.5, 0.75),
                 gamma: float = 0.1, warmup_epochs: int = 0, label_smoothing: float = 0.0,
                 rho: float = 2.0, adaptive: bool = True, seed: int = 0, node: str = "unlearner"):
        super().__init__()
        # logger=False: the run's config is logged once, nested (sparse_mu.loggers), not as
        # ambiguous top-level keys (`lr`, `epochs`) of whichever loop ran last
        self.save_hyperparameters(ignore=["net", "task", "data", "indices", "features", "labels"], logger=False)
        check(epochs >= 1, f"{node}.epochs", "an integer >= 1", epochs)
        check(batch_size >= 1, f"{node}.batch_size", "an integer >= 1", batch_size)
        check(lr > 0, f"{node}.lr", "> 0", lr)
        check(weight_decay >= 0, f"{node}.weight_decay", ">= 0", weight_decay)
        check(0 <= momentum < 1, f"{node}.momentum", "in [0, 1)", momentum)
        check(optimizer in OPTIMIZERS, f"{node}.optimizer", f"one of {', '.join(OPTIMIZERS)}", optimizer)
        check(schedule in SCHEDULES, f"{node}.schedule", f"one of {', '.join(SCHEDULES)}", schedule)
        check(all(0 < m < 1 for m in milestones), f"{node}.milestones", "fractions of training in (0, 1)", milestones)
        check(0 <= label_smoothing < 1, f"{node}.label_smoothing", "in [0, 1)", label_smoothing)
        check(0 <= warmup_epochs < epochs, f"{node}.warmup_epochs", f"in [0, {epochs - 1}]", warmup_epochs)
        check(rho >= 0, f"{node}.rho", ">= 0", rho)
        self.net = net
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.lr, self.momentum, self.weight_decay, self.optimizer_name = lr, momentum, weight_decay, optimizer
        self.schedule, self.milestones, self.gamma = schedule, tuple(milestones), gamma
        self.warmup_epochs, self.label_smoothing = warmup_epochs, label_smoothing
        self.rho, self.adaptive = rho, adaptive
        self._losses: dict[str, tuple[torch.Tensor, int]] = {}
        self._logged: set[str] = set()
        self._losses_epoch = -1
        # first batch and highest epoch mean of every logged loss (the damage flag reads them)
        self.loss_start: dict[str, float] = {}
        self.loss_peak: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def cross_entropy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.net(x), y, label_smoothing=self.label_smoothing)

    def parameters_to_train(self):
        return self.net.parameters()

    def configure_optimizers(self):
        params = [p for p in self.parameters_to_train() if p.requires_grad]
        kernel = optimizer_kernel(self.device)  # the same update, computed by fewer, larger kernels
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, **kernel)
        elif self.optimizer_name == "sam":
            opt = SAM(params, torch.optim.SGD, rho=self.rho, adaptive=self.adaptive, lr=self.lr,
                      momentum=self.momentum, weight_decay=self.weight_decay, **kernel)
        else:
            cls = torch.optim.Adam if self.optimizer_name == "adam" else torch.optim.AdamW
            opt = cls(params, lr=self.lr, weight_decay=self.weight_decay, **kernel)
        main = self.epochs - self.warmup_epochs
        if self.schedule == "step":
            steps = sorted({max(1, round(m * main)) for m in self.milestones})
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, steps, self.gamma)
        elif self.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=main)
        else:
            sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
        if self.warmup_epochs:
            warm = torch.optim.lr_scheduler.LinearLR(opt, 1.0 / (self.warmup_epochs + 1), total_iters=self.warmup_epochs)
            sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, sched], milestones=[self.warmup_epochs])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def log_loss(self, name: str, value: torch.Tensor) -> None:
        """Add a step's `value` to the epoch's mean of `name` (progress bar and loggers).

        Summed on the device and handed to Lightning once, at the epoch's last batch: `self.log`
        costs about half a millisecond of Python per call, a tenth of a small model's step. A
        second value in the same last step (SAM evaluates the loss twice) is left out.
        """
        if self._trainer is None:
            return
        progress = self.trainer.fit_loop.epoch_loop.batch_progress
        if self._losses_epoch != self.current_epoch:
            self._losses, self._logged, self._losses_epoch = {}, set(), self.current_epoch
        if name in self._logged:
            return
        if name not in self.loss_start:  # one host read per loss and run
            self.loss_start[name] = float(value.detach())
        total, steps = self._losses.get(name, (0.0, 0))
        self._losses[name] = total, steps = total + value.detach().float(), steps + 1
        if progress.is_last_batch or progress.current.ready == self.trainer.num_training_batches:
            mean = total / steps
            if not torch.isfinite(mean):  # one host read per epoch: stop a diverged run early
                raise Diverged(f"{name} is {float(mean)} in epoch {self.current_epoch + 1} at learning rate "
                               f"{self.lr}: training diverged; lower the learning rate of this stage")
            self.loss_peak[name] = max(self.loss_peak.get(name, 0.0), float(mean))
            self.log(name, mean, on_step=False, on_epoch=True, prog_bar=True)
            self._logged.add(name)


class Classifier(TrainLoop):
    """Training profile of the base model: cross-entropy on `indices` of `data`.

    Keeps a copy of the weights at the start of epoch `rewind_epoch` (0 = initialisation) for
    rewinding pruners; `rewind_state` is None until then. With `record`, `confidence` sums each
    sample's softmax confidence in its true label over the training steps that saw it (row 0,
    by dataset index) and counts them (row 1): the memorisation proxy of `forget=memorised`,
    read off the steps' own outputs.
    """

    def __init__(self, net: nn.Module, data: ImageData, indices: torch.Tensor, *,
                 rewind_epoch: int = 8, record: bool = False, **loop):
        super().__init__(net, node=loop.pop("node", "train"), **loop)
        check(0 <= rewind_epoch <= self.epochs, "train.rewind_epoch", f"in [0, {self.epochs}] (train.epochs)", rewind_epoch)
        self.data, self.indices, self.rewind_epoch = data, indices, rewind_epoch
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self.confidence = torch.zeros(2, len(data.y), dtype=torch.float64) if record else None
        self._recorded = (-1, -1)

    def train_dataloader(self):
        return self.data.loader(self.indices, batch_size=self.batch_size, train=True, seed=self.seed, device=self.device)

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        if self.confidence is not None and self._recorded != (self.current_epoch, batch_idx):
            self._recorded = (self.current_epoch, batch_idx)  # SAM runs a step twice: count it once
            self._record(logits.detach(), y, idx)
        self.log_loss("train/loss", loss)
        return loss

    def _record(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        if self.confidence.device != logits.device:
            self.confidence = self.confidence.to(logits.device)
        p = torch.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
        self.confidence[0].index_add_(0, idx, p.double())
        self.confidence[1].index_add_(0, idx, torch.ones_like(p, dtype=torch.float64))

    def confidence_record(self) -> dict[str, torch.Tensor]:
        """The record summed over every process (each DDP rank saw its share of D), on the CPU."""
        total = self.confidence
        if self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(total.clone(), reduce_op="sum")
        total = total.cpu()
        return {"sum": total[0].clone(), "count": total[1].clone()}

    def _snapshot(self) -> None:
        self.rewind_state = {k: v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
                             for k, v in self.net.state_dict().items()}

    def on_train_epoch_start(self):
        if self.current_epoch == self.rewind_epoch:
            self._snapshot()

    def on_train_end(self):
        if self.rewind_state is None:
            self._snapshot()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rewind_state"] = self.rewind_state
        if self.confidence is not None:
            checkpoint["confidence"] = self.confidence.cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.rewind_state = checkpoint.get("rewind_state")
        if self.confidence is not None and checkpoint.get("confidence") is not None:
            self.confidence = checkpoint["confidence"]
