"""The run: data split -> base model -> pruned model -> forget set -> unlearning -> evaluation.

Every stage is a function of its config and the stages before it. The base model, the pruned
model, the original model's metrics and the Retrain reference are cached (`sparse_mu.cache`)
under a hash of exactly those inputs, so a sweep trains each base model once and computes each
Retrain reference once per (mask, forget set, seed). The unlearning run itself is the
experiment and always runs. Every training loop checkpoints each epoch and an interrupted run
resumes from its last checkpoint when rerun.

The applications (docs/applications.md) reuse these stages: backdoor forgetting poisons the data
in `setup` and adds SA/ASR to every evaluation; `transfer` linear-probes the original, Retrain
and unlearned models on a target data set (`transfer_metrics`); `unprune` re-derives the mask
from the unlearned dense model and compares it with retrain-then-prune (`unprune_metrics`).
"""

from __future__ import annotations

import logging
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from sparse_mu import cost
from sparse_mu.cache import (
    Artifact,
    ArtifactCache,
    global_rank,
    load_tensors,
    save_tensors,
    stable_hash,
    write_json,
)
from sparse_mu.callbacks import LAST, MaskEnforcer, StageTimer, last_checkpoint
from sparse_mu.config import build
from sparse_mu.data import ForgetSet, ImageData, prepare
from sparse_mu.errors import ConfigError, Diverged, check
from sparse_mu.failures import save_results
from sparse_mu.fast import prepare_net, resolve_channels_last, resolve_precision
from sparse_mu.loggers import finish_loggers, job_loggers, log_stage_curves
from sparse_mu.metrics import (
    BACKDOOR_KEYS,
    GAP_KEYS,
    accuracy,
    disparity_average,
    evaluate,
    gaps,
    kl_divergence,
    predict,
)
from sparse_mu.pruning import (
    BaseWeights,
    Dense,
    Mask,
    Pruner,
    classifier_head,
    iom,
    iou,
    layer_sparsity,
    weight_sparsity,
)
from sparse_mu.transfer import LinearProbe, adapt, feature_extractor, features
from sparse_mu.unlearn import Unlearner, UnlearnTask
from sparse_mu.validation import validate

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

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

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
                      epochs: int | None = None) -> L.LightningModule:
        """The training profile on `indices` (default D), for `epochs` (default the profile's)."""
        # no later stage rewinds to a snapshot of such a run, and the profile's rewind epoch may
        # lie beyond a short schedule
        extra = {"epochs": epochs, "rewind_epoch": 0} if epochs is not None else {}
        return build(self.cfg.train, net=net, data=self.data, indices=self.data.train if indices is None else indices,
                     seed=self.seed, **extra)

    def unlearner(self, node: DictConfig, net: nn.Module, task: UnlearnTask) -> Unlearner:
        return build(node, net=net, task=task, seed=self.seed, node=node._key())  # messages name the node

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


def setup(cfg: DictConfig, out_dir: Path) -> Job:
    """Instantiate and check every component before any training: bad input fails here."""
    validate(cfg)  # every setting's type, and unknown keys (sparse_mu.validation)
    L.seed_everything(int(cfg.seed), verbose=False)
    device = pick_device(cfg)
    resolve_speed_settings(cfg, device)
    source = build(cfg.dataset)
    pruner = build(cfg.pruner)
    forget_spec = build(cfg.forget)
    data = forget_spec.training_data(prepare(source))
    forget = forget_spec.select(data)
    if len(forget.forget) == 0 or len(forget.retain) == 0:
        raise ConfigError(f"forget: the forget set has {len(forget.forget)} and the retain set "
                          f"{len(forget.retain)} samples; both must be non-empty")
    if int(cfg.checkpoint_every) < 0:
        raise ConfigError(f"checkpoint_every must be >= 0 (0 = no checkpoints); got {cfg.checkpoint_every}")
    job = Job(cfg, out_dir, data, forget, pruner, ArtifactCache(cfg.paths.cache_dir), device)
    net = job.make_net()
    pruner.validate(net)
    job.train_profile(net)
    if cfg.get("transfer"):
        job.target = transfer_target(job)
        # a probe on placeholder features: its settings are checked now, not after the training
        build(cfg.transfer.probe, features=torch.zeros(1, 1), labels=torch.zeros(1, dtype=torch.long),
              num_classes=job.target.num_classes)
    if cfg.unprune.enabled:
        check(pruner.needs_trained_base and not isinstance(pruner, Dense), "pruner",
              "a pruner of the trained dense model (omp, imp, random) with unprune.enabled=true",
              choices(cfg)["pruner"])
        epochs = cfg.unprune.finetune_epochs
        check(epochs is None or (isinstance(epochs, int) and epochs >= 1), "unprune.finetune_epochs",
              "null (the training profile's epochs) or an integer >= 1", epochs)
    init = _cpu_state(net)
    trained = init if pruner.needs_trained_base else None
    task = UnlearnTask(data, forget, None, BaseWeights(init, trained, trained))
    job.unlearner(cfg.unlearner, job.make_net(), task)
    if cfg.eval.retrain_reference:
        job.unlearner(cfg.reference, job.make_net(), task)
    return job


# -- cache keys: what each stage computes from -------------------------------------------------
# Pure functions of the job (tests/test_cache_keys.py): every setting that changes what a stage
# computes is in its key, directly or through the key of the stage it starts from; the
# `_OPERATIONAL` settings, `fast.*`, loggers, callbacks and paths are in none.

def forget_key(forget: ForgetSet) -> str:
    return stable_hash(forget.to_json())


def eval_key(job: Job) -> dict:
    # eval.damage only judges the metrics afterwards
    evaluation = {k: v for k, v in _plain(job.cfg.eval).items() if k != "damage"}
    return {"eval": evaluation, "forget": forget_key(job.forget), "seed": job.seed}


def trainer_key(job: Job) -> dict:
    return _without(job.cfg.trainer, "trainer")


def base_inputs(job: Job, retain: bool = False) -> dict:
    """The base stage's key: the data, the architecture, the seed and, when the dense model is
    trained, the training profile and the trainer (D_r instead of D if `retain`)."""
    data_key = {"dataset": _without(job.cfg.dataset, "dataset"), "fingerprint": job.data.fingerprint}
    inputs = {"data": data_key, "arch": _plain(job.cfg.arch), "seed": job.seed}
    if job.pruner.needs_trained_base:
        inputs |= {"train": _plain(job.cfg.train), "trainer": trainer_key(job)}
    else:
        inputs["init_only"] = True
    if retain:
        inputs["retain_of"] = forget_key(job.forget)
    return inputs


def prune_inputs(job: Job, base_key: str, retain: bool = False, epochs: int | None = None) -> dict:
    """The prune stage's key: the base model's, the pruner's settings and the retraining's."""
    inputs = {"base": base_key, "pruner": _plain(job.cfg.pruner), "train": _plain(job.cfg.train),
              **job.pruner.inputs()}
    if not job.pruner.needs_trained_base:
        # an init-only base key holds no trainer settings, yet the retraining runs under them
        inputs["trainer"] = trainer_key(job)
    if retain:
        inputs["retain_of"] = forget_key(job.forget)
    if epochs is not None:
        inputs["epochs"] = epochs
    return inputs


def original_inputs(job: Job, pruned_key: str) -> dict:
    return {"pruned": pruned_key, **eval_key(job)}


def reference_inputs(job: Job, pruned_key: str) -> dict:
    """The Retrain reference model's key: no `eval.*`, so evaluation settings never retrain it
    (its metrics are an entry of their own, `reference_metrics_inputs`)."""
    return {"pruned": pruned_key, "reference": _plain(job.cfg.reference), "trainer": trainer_key(job),
            "forget": forget_key(job.forget), "seed": job.seed}


def reference_metrics_inputs(job: Job, model_key: str) -> dict:
    return {"model": model_key, **eval_key(job)}


def unlearn_inputs(job: Job, pruned_key: str) -> dict:
    """The unlearning run's checkpoint folder (a scratch key: the run itself is never cached).
    With a budget, the epochs follow from the Retrain reference's steps, so its recipe counts."""
    inputs = {"pruned": pruned_key, "unlearner": _plain(job.cfg.unlearner), "trainer": trainer_key(job),
              **eval_key(job)}
    if job.cfg.unlearner.get("budget") is not None:
        inputs["reference"] = _plain(job.cfg.reference)
    return inputs


# -- stages ----------------------------------------------------------------------------------

def base_stage(job: Job, retain: bool = False) -> tuple[Artifact, BaseWeights]:
    """The dense model trained on D (on D_r if `retain`) with the training profile (cached).

    Pruners that read only the initial weights (`needs_trained_base = False`: SynFlow, an
    imported checkpoint) get an artifact with the initial weights alone: no training.
    """
    trained = job.pruner.needs_trained_base
    inputs = base_inputs(job, retain)

    def make(work: Path, ckpt: Path) -> dict:
        L.seed_everything(job.seed, verbose=False)
        net = job.make_net()
        save_tensors(_cpu_state(net), work / "init.pt")
        if not trained:
            return {"trained": False}
        module = job.train_profile(net, job.forget.retain if retain else None)
        seconds = job.fit(module, "base (D_r)" if retain else "base", None, CSVLogger(work, name="logs", version=""), ckpt)
        save_tensors(module.rewind_state, work / "rewind.pt")
        save_tensors(_cpu_state(net), work / "final.pt")
        return {"trained": True, "train_seconds": seconds, **job.quick_accuracy(net)}

    art = job.cache.get_or_build("base", inputs, make)
    files = ("init.pt", "rewind.pt", "final.pt") if trained else ("init.pt",)
    weights = [load_tensors(art.file(f)) for f in files]
    return art, BaseWeights(*weights) if trained else BaseWeights(weights[0], None, None)


def prune_stage(job: Job, base_art: Artifact, base: BaseWeights, retain: bool = False,
                epochs: int | None = None) -> tuple[Artifact | None, State, Mask | None]:
    """The pruner's weights and mask (cached; dense returns the base model).

    Every retraining runs the training profile on D, or on D_r if `retain`, for `epochs` (default:
    the profile's).
    """
    if isinstance(job.pruner, Dense):
        return None, base.final, None
    inputs = prune_inputs(job, base_art.key, retain, epochs)

    def make(work: Path, ckpt: Path) -> dict:
        rounds: list[float] = []

        def train(start: State, mask: Mask) -> State:
            # Each training run (an IMP round) is kept, so a resumed build skips finished rounds.
            done = work / f"round{len(rounds)}.pt"
            if done.is_file():
                rounds.append(0.0)
                return load_tensors(done)
            L.seed_everything(job.seed, verbose=False)
            net = job.net_with(start)
            module = job.train_profile(net, job.forget.retain if retain else None, epochs)
            logger = CSVLogger(work, name="logs", version=f"round{len(rounds)}")
            rounds.append(job.fit(module, f"prune {len(rounds) + 1}", mask, logger, ckpt / f"round{len(rounds)}"))
            state = _cpu_state(net)
            save_tensors(state, done)
            return state

        # pruners that score a few training samples (SNIP, GraSP) see D, or D_r when un-pruning
        extra = {"data": (job.data, job.forget.retain if retain else job.data.train)} if job.pruner.needs_data else {}
        state, mask = job.pruner.prune(job.make_net(), base, train, **extra)
        for done in work.glob("round*.pt"):
            done.unlink()
        save_tensors(state, work / "model.pt")
        mask.save(work / "mask.pt")
        net = job.net_with(state)
        return {"train_seconds": sum(rounds), "sparsity": weight_sparsity(net), "rounds": len(rounds),
                "layer_sparsity": mask.layer_report(), "head": classifier_head(net), **job.quick_accuracy(net)}

    art = job.cache.get_or_build("prune", inputs, make)
    return art, load_tensors(art.file("model.pt")), Mask.load(art.file("mask.pt"))


def original_stage(job: Job, pruned_key: str, state: State) -> dict:
    """Metrics of the model before unlearning (cached: the MIA fits are not free)."""
    def make(work: Path, ckpt: Path) -> dict:
        return {"metrics": job.metrics(job.net_with(state))}

    return job.cache.get_or_build("original", original_inputs(job, pruned_key), make).meta["metrics"]


def unlearn(job: Job, node: DictConfig, state: State, mask: Mask | None, base: BaseWeights,
            stage: str, logger: Logger | bool, ckpt: Path | None) -> tuple[nn.Module, float, dict]:
    """Run one unlearner from `state`; returns the net, the loop's seconds and its settings
    (with the optimiser `steps` Lightning took and, for one-shot methods, `grad_samples`)."""
    L.seed_everything(job.seed, verbose=False)
    net = job.net_with(state)
    task = UnlearnTask(job.data, job.forget, mask, base)
    module = job.unlearner(node, net, task)
    if module.budget is not None:
        module = with_budget(job, node, module, net, task)
    seconds = job.fit(module, stage, mask, logger, ckpt)
    work = {"steps": cost.steps_taken(module), "grad_samples": cost.one_shot_samples(module),
            "max_steps": module.max_steps, "loss_start": module.loss_start, "loss_peak": module.loss_peak}
    return net, seconds, {**module.settings(), **work}


def reference_steps(job: Job, task: UnlearnTask) -> int:
    """The optimiser steps the Retrain reference (`cfg.reference`) takes: epochs x batches."""
    return cost.planned_steps(job.unlearner(job.cfg.reference, job.make_net(), task), job.cfg.trainer.limit_train_batches)


def with_budget(job: Job, node: DictConfig, module: Unlearner, net: nn.Module, task: UnlearnTask) -> Unlearner:
    """`module` rebuilt with the epochs (and step limit) that spend `budget` x Retrain's steps."""
    limit = job.cfg.trainer.limit_train_batches
    steps_per_epoch = cost.batches_per_epoch(module, limit)
    epochs, max_steps = cost.budget_schedule(module.budget, reference_steps(job, task), steps_per_epoch)
    module = build(node, net=net, task=task, seed=job.seed, epochs=epochs)
    module.max_steps = max_steps
    log.info("unlearner: budget %g of Retrain's steps: %d epochs%s", module.budget, epochs,
             f", {max_steps} steps" if max_steps else "")
    return module


def reference_stage(job: Job, pruned_key: str, state: State, mask: Mask | None, base: BaseWeights) -> Artifact:
    """Retrain on D_r with the same model, mask, forget set and seed (cached), and its metrics.

    The model is keyed without `eval.*` (evaluation settings never retrain it); its metrics are
    a second entry keyed with them. The returned artifact is the model's, its `meta["metrics"]`
    the metrics with `RTE_s`, `steps` and `batch_size` (for the cost ratios).
    """
    inputs = reference_inputs(job, pruned_key)

    def make(work: Path, ckpt: Path) -> dict:
        logger = CSVLogger(work, name="logs", version="")
        net, seconds, settings = unlearn(job, job.cfg.reference, state, mask, base, "retrain reference", logger, ckpt)
        save_tensors(_cpu_state(net), work / "model.pt")
        return {"RTE_s": seconds, "steps": settings.pop("steps"), "settings": settings}

    model = job.cache.get_or_build("reference_model", inputs, make)

    def evaluate_model(work: Path, ckpt: Path) -> dict:
        return {"metrics": job.metrics(job.net_with(load_tensors(model.file("model.pt"))))}

    scored = job.cache.get_or_build("reference", reference_metrics_inputs(job, model.key), evaluate_model)
    model.meta["metrics"] = {**scored.meta["metrics"], "RTE_s": model.meta["RTE_s"], "steps": model.meta["steps"],
                             "batch_size": model.meta["settings"]["batch_size"]}
    return model


# -- applications: transfer learning, un-pruning ------------------------------------------------

def transfer_target(job: Job) -> ImageData:
    """The transfer target (`transfer.dataset`), adapted to the source model's channels and
    normalisation (`sparse_mu.transfer.adapt`)."""
    try:
        target = prepare(build(job.cfg.transfer.dataset))
    except ConfigError as e:
        raise ConfigError(f"transfer.{e}") from None  # the target's own messages name `dataset.*`
    check(isinstance(target, ImageData), "transfer.dataset", "an in-memory data set, not an image folder", target.name)
    data = job.data
    if isinstance(data, ImageData):
        mean, std = data.mean, data.std
    else:  # folder data sets normalise in their transforms, with the configured statistics
        mean, std = torch.tensor(job.cfg.dataset.mean), torch.tensor(job.cfg.dataset.std)
    return adapt(target, data.in_channels, mean, std)


def probe(job: Job, net: nn.Module) -> dict:
    """Linear-probe test accuracy (percent) of `net`'s frozen features on the transfer target, and
    the seconds taken (feature extraction and probe training)."""
    start = time.perf_counter()
    target = job.target
    extractor = feature_extractor(net).to(job.device)

    def feats(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loader = target.loader(idx, batch_size=job.eval_batch_size, train=False, device=job.device)
        return features(extractor, loader, job.data.image_size)

    (x_train, y_train), (x_test, y_test) = feats(target.train), feats(target.test)
    L.seed_everything(job.seed, verbose=False)
    module: LinearProbe = build(job.cfg.transfer.probe, features=x_train, labels=y_train,
                                num_classes=target.num_classes, seed=job.seed)
    job.fit(module, "linear probe", None, False)
    return {"acc": module.accuracy(x_test, y_test), "seconds": time.perf_counter() - start}


def probe_stage(job: Job, source_key: str, state: State) -> dict:
    """`probe` of a cached model (cached too: it depends only on the model and the target)."""
    target = {"dataset": _without(job.cfg.transfer.dataset, "dataset"), "fingerprint": job.target.fingerprint}
    inputs = {"source": source_key, "probe": _plain(job.cfg.transfer.probe), "target": target,
              "seed": job.seed, "trainer": _without(job.cfg.trainer, "trainer")}
    return job.cache.get_or_build("probe", inputs, lambda work, ckpt: probe(job, job.net_with(state))).meta


def transfer_metrics(job: Job, state: State, pruned_key: str, reference: Artifact | None,
                     net: nn.Module, seconds: float) -> dict:
    """`transfer_acc` of the original (pruned, before unlearning), Retrain and unlearned models,
    and `transfer_time_s`: the time to obtain each source model (0, Retrain's RTE, the
    unlearner's RTE) plus its probe. Retrain's are None without the Retrain reference."""
    probes = {"original": probe_stage(job, pruned_key, state), "unlearned": probe(job, net)}
    source_s = {"original": 0.0, "unlearned": seconds}
    if reference is not None:
        probes["retrain"] = probe_stage(job, reference.key, load_tensors(reference.file("model.pt")))
        source_s["retrain"] = reference.meta["metrics"]["RTE_s"]
    routes = ("original", "retrain", "unlearned")
    acc = {k: probes[k]["acc"] if k in probes else None for k in routes}
    log.info("transfer: target accuracy (linear probe) %s", {k: v and round(v, 2) for k, v in acc.items()})
    return {"transfer_acc": acc,
            "transfer_time_s": {k: round(source_s[k] + probes[k]["seconds"], 3) if k in probes else None
                                for k in routes}}


def unprune_stage(job: Job, base_art: Artifact, base: BaseWeights) -> tuple[Artifact, State, Mask, float]:
    """Un-pruning: the unlearner applied to the dense base model (no mask; cached), then the
    pruner run again on the unlearned weights (same criterion and sparsity), rewound as the
    pruner rewinds and retrained on D_r for `unprune.finetune_epochs` (cached). Returns the
    pruned artifact, weights, mask and the seconds of both loops."""
    inputs = {"base": base_art.key, "unlearner": _plain(job.cfg.unlearner),
              "trainer": _without(job.cfg.trainer, "trainer"), **eval_key(job)}

    def make(work: Path, ckpt: Path) -> dict:
        logger = CSVLogger(work, name="logs", version="")
        net, seconds, settings = unlearn(job, job.cfg.unlearner, base.final, None, base, "unlearn dense", logger, ckpt)
        save_tensors(_cpu_state(net), work / "model.pt")
        return {"RTE_s": seconds, "settings": settings}

    dense = job.cache.get_or_build("unlearn_dense", inputs, make)
    unlearned = BaseWeights(base.init, base.rewind, load_tensors(dense.file("model.pt")))
    art, state, mask = prune_stage(job, dense, unlearned, retain=True, epochs=job.cfg.unprune.finetune_epochs)
    return art, state, mask, dense.meta["RTE_s"] + art.meta["train_seconds"]


def unprune_metrics(job: Job, base_art: Artifact, base: BaseWeights, mask: Mask, net: nn.Module) -> dict:
    """The un-pruned model and the prune-then-unlearn model (`mask`, `net`) against the
    reference, retrain-then-prune: a dense model trained on D_r, pruned (retraining on D_r).

    mask_IoU / mask_IoM (percent, kept weights, global; per layer in `mask_layers`) and KL_test /
    KL_forget (mean KL(p_ref || p_model) on the test set and D_f); the prune-then-unlearn
    model's carry the suffix `_original`. `unpruned` holds the un-pruned model's metrics.
    """
    art, state, unpruned_mask, seconds = unprune_stage(job, base_art, base)
    ref_base_art, ref_base = base_stage(job, retain=True)
    ref_art, ref_state, ref_mask = prune_stage(job, ref_base_art, ref_base, retain=True)
    unpruned, ref_net = job.net_with(state), job.net_with(ref_state)
    parts = {"test": job.data.test, "forget": job.forget.forget}
    p_ref = {part: job.outputs(ref_net, idx)[0] for part, idx in parts.items()}
    out: dict = {}
    layers: dict[str, dict[str, float]] = {}
    for suffix, (m, model) in {"": (unpruned_mask, unpruned), "_original": (mask, net)}.items():
        for name, overlap in (("IoU", iou(m, ref_mask)), ("IoM", iom(m, ref_mask))):
            out[f"mask_{name}{suffix}"] = 100.0 * overlap["global"]
            for layer, v in overlap["layers"].items():
                layers.setdefault(layer, {})[f"{name}{suffix}"] = 100.0 * v
        for part, idx in parts.items():
            out[f"KL_{part}{suffix}"] = kl_divergence(p_ref[part], job.outputs(model, idx)[0])
    m = job.metrics(unpruned)
    log.info("unprune: mask IoU with retrain-then-prune %.2f (prune-then-unlearn %.2f), KL_test %.4f (%.4f)",
             out["mask_IoU"], out["mask_IoU_original"], out["KL_test"], out["KL_test_original"])
    return {**out, "mask_layers": layers,
            "unpruned": {**{k: m[k] for k in (*GAP_KEYS, *BACKDOOR_KEYS) if k in m},
                         "sparsity": 100.0 * weight_sparsity(unpruned), "RTE_s": round(seconds, 4)},
            "artifacts": {"unpruned": art.key, "unprune_reference": ref_art.key}}


# -- outputs ---------------------------------------------------------------------------------

def quiet_libraries() -> None:
    """Keep the console for our progress and results, not library chatter."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


def run(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Run one job end to end; writes config, indices and metrics.json into `out_dir`.

    Under multi-process data parallelism every rank runs this; only rank 0 writes outputs.
    """
    start = time.time()
    quiet_libraries()
    out_dir = Path(out_dir)
    job = setup(cfg, out_dir)
    rank0 = global_rank() == 0
    if rank0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        write_json(out_dir / "forget_indices.json", job.forget.to_json())
        write_json(out_dir / "split_indices.json", {k: getattr(job.data, k).tolist() for k in ("train", "val", "test")})
    log.info("data: %s, |D|=%d (forget %d, retain %d), val %d, test %d, device %s", job.data.name,
             len(job.data.train), len(job.forget.forget), len(job.forget.retain), len(job.data.val),
             len(job.data.test), device_name(job.device))

    base_art, base = base_stage(job)
    prune_art, state, mask = prune_stage(job, base_art, base)
    pruned_key = prune_art.key if prune_art else base_art.key
    reference = reference_stage(job, pruned_key, state, mask, base) if cfg.eval.retrain_reference else None
    original = original_stage(job, pruned_key, state)

    loggers = job_loggers(cfg, out_dir, choices(cfg)) if rank0 else []
    log_stage_curves(loggers, {"base": base_art.path, "prune": prune_art and prune_art.path,
                               "reference": reference and reference.path})
    metrics: dict = {}
    try:
        if reference is not None and _plain(cfg.unlearner) == _plain(cfg.reference):
            log.info("unlearner: identical to the Retrain reference; reusing it (RTE from its build)")
            net = job.net_with(load_tensors(reference.file("model.pt")))
            seconds = reference.meta["RTE_s"]
            settings = {**reference.meta["settings"], "steps": reference.meta["steps"]}
        else:
            with job.cache.scratch("unlearn", unlearn_inputs(job, pruned_key)) as ckpt:
                net, seconds, settings = unlearn(job, cfg.unlearner, state, mask, base, "unlearn",
                                                 loggers or False, ckpt)
        metrics = assemble(job, net, seconds, settings, original, reference, pruned_key, base_art)
        if cfg.get("transfer"):
            metrics |= transfer_metrics(job, state, pruned_key, reference, net, seconds)
        if cfg.unprune.enabled:
            unpruned = unprune_metrics(job, base_art, base, mask, net)
            metrics["artifacts"] |= unpruned.pop("artifacts")
            metrics |= unpruned
        metrics["wall_s"] = round(time.time() - start, 3)
        if rank0:
            save_results(out_dir / "metrics.json", metrics)  # never lost: a temp file if this fails
    finally:
        finish_loggers(loggers, metrics, "success" if metrics else "failed")
    return metrics


def assemble(job: Job, net: nn.Module, seconds: float, settings: dict, original: dict,
             reference: Artifact | None, pruned_key: str, base_art: Artifact) -> dict:
    """The metrics.json record of one run."""
    cfg = job.cfg
    m = job.metrics(net)
    ref = reference.meta["metrics"] if reference is not None else None
    gap = gaps(m, ref) if ref else None
    net.cpu()
    names = choices(cfg)
    identity = {k: _plain(cfg[k]) for k in GROUPS} | {"seed": job.seed}
    if cfg.get("transfer"):
        identity["transfer"] = _plain(cfg.transfer)
    if cfg.unprune.enabled:
        identity["unprune"] = _plain(cfg.unprune)
    backdoor = [k for k in BACKDOOR_KEYS if k in m]
    settings = dict(settings)
    work = {k: settings.pop(k, None) for k in ("steps", "grad_samples", "max_steps", "loss_start", "loss_peak")}
    if work["max_steps"] is not None:
        settings["max_steps"] = work["max_steps"]
    spent = cost.cost_fields(work["steps"], seconds, work["grad_samples"], ref)
    limits = cfg.eval.damage
    reasons = cost.damage(m["RA"], ref["RA"] if ref else None, work["loss_start"] or {}, work["loss_peak"] or {},
                     float(limits.ra_drop), float(limits.loss_ratio))
    for reason in reasons:
        log.warning("damaged: %s", reason)
    before = {"SA_before": original["SA"], "ASR_before": original["ASR"]} if backdoor else {}
    return {
        **m,
        "RTE_s": round(seconds, 4),
        "sparsity": 100.0 * weight_sparsity(net),
        "layer_sparsity": layer_sparsity(net),
        "disparity_avg": disparity_average(gap) if gap else None,
        **spent,
        "damaged": bool(reasons),
        "damage": reasons,
        **before,
        "retrain": {k: ref[k] for k in (*GAP_KEYS, *backdoor, "RTE_s", "steps")} if ref else None,
        "gap": gap,
        "original": {k: original[k] for k in (*GAP_KEYS, *backdoor)},
        "config_hash": stable_hash(identity),
        "device": device_name(job.device),
        "precision": job.precision,
        "seed": job.seed,
        **{k: names[k] for k in ("dataset", "arch", "pruner", "unlearner", "forget")},
        "forget_size": len(job.forget.forget),
        "class_idx": job.forget.class_idx,
        "target_sparsity": 100.0 * float(getattr(job.pruner, "sparsity", 0.0)),
        "hparams": settings,
        "artifacts": {"base": base_art.key, "pruned": pruned_key, "reference": reference.key if reference else None},
    }
