"""The cached stages: base model, pruned model, the original model's metrics, the Retrain
reference, and `unlearn`, the loop every unlearning run (and Retrain) goes through."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig
from torch import nn

from sparse_mu import cost
from sparse_mu.cache import (
    Artifact,
    load_tensors,
    save_tensors,
)
from sparse_mu.config import build
from sparse_mu.data import ForgetSet
from sparse_mu.job import Job, State, _cpu_state
from sparse_mu.keys import (
    base_inputs,
    original_inputs,
    prune_inputs,
    reference_inputs,
    reference_metrics_inputs,
)
from sparse_mu.pruning import (
    BaseWeights,
    Dense,
    Mask,
    classifier_head,
    weight_sparsity,
)
from sparse_mu.unlearn import Unlearner, UnlearnTask

log = logging.getLogger("sparse_mu")
CONFIDENCE = "confidence.pt"  # the base artifact's per-sample confidence record (forget=memorised)

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
        module = job.train_profile(net, job.forget.retain if retain else None, record=job.records_confidence)
        seconds = job.fit(module, "base (D_r)" if retain else "base", None, CSVLogger(work, name="logs", version=""), ckpt)
        save_tensors(module.rewind_state, work / "rewind.pt")
        save_tensors(_cpu_state(net), work / "final.pt")
        if job.records_confidence:
            save_tensors(module.confidence_record(), work / CONFIDENCE)
        return {"trained": True, "train_seconds": seconds, "steps": cost.steps_taken(module), **job.quick_accuracy(net)}

    art = job.cache.get_or_build("base", inputs, make)
    files = ("init.pt", "rewind.pt", "final.pt") if trained else ("init.pt",)
    weights = [load_tensors(art.file(f)) for f in files]
    return art, BaseWeights(*weights) if trained else BaseWeights(weights[0], None, None)


def forget_stage(job: Job, base_art: Artifact) -> ForgetSet:
    """D_f. Most settings draw it from D alone (in `setup`); forget=memorised ranks D by the
    confidence the base model recorded while training on all of D, so only now is it known.
    Either way the base model does not depend on it; every later stage's key does."""
    if not job.records_confidence:
        return job.forget
    return job.forget_spec.select(job.data, load_tensors(base_art.file(CONFIDENCE)))


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
        steps: list[int | None] = []  # per round; a round finished before a resume counts as unknown

        def train(start: State, mask: Mask) -> State:
            # Each training run (an IMP round) is kept, so a resumed build skips finished rounds.
            done = work / f"round{len(rounds)}.pt"
            if done.is_file():
                rounds.append(0.0)
                steps.append(None)
                return load_tensors(done)
            L.seed_everything(job.seed, verbose=False)
            net = job.net_with(start)
            module = job.train_profile(net, job.forget.retain if retain else None, epochs)
            logger = CSVLogger(work, name="logs", version=f"round{len(rounds)}")
            rounds.append(job.fit(module, f"prune {len(rounds) + 1}", mask, logger, ckpt / f"round{len(rounds)}"))
            steps.append(cost.steps_taken(module))
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
        return {"train_seconds": sum(rounds), "steps": None if None in steps else sum(steps),
                "sparsity": weight_sparsity(net), "rounds": len(rounds),
                "layer_sparsity": mask.layer_report(), "head": classifier_head(net), **job.quick_accuracy(net)}

    art = job.cache.get_or_build("prune", inputs, make)
    return art, load_tensors(art.file("model.pt")), Mask.load(art.file("mask.pt"))


def original_stage(job: Job, pruned_key: str, state: State) -> dict:
    """Metrics of the model before unlearning (cached: the MIA fits are not free)."""
    def make(work: Path, ckpt: Path) -> dict:
        return {"metrics": job.metrics(job.net_with(state))}

    return job.cache.get_or_build("original", original_inputs(job, pruned_key), make).meta["metrics"]


def unlearn(job: Job, node: DictConfig, state: State, mask: Mask | None, base: BaseWeights,
            stage: str, logger: Logger | bool, ckpt: Path | None, seed: int | None = None) -> tuple[nn.Module, float, dict]:
    """Run one unlearner from `state`; returns the net, the loop's seconds and its settings
    (with the optimiser `steps` Lightning took and, for one-shot methods, `grad_samples`).
    `seed` drives the loop's randomness: the unlearning seed by default (a Retrain reference
    passes its training seed)."""
    seed = job.unlearn_seed if seed is None else seed
    L.seed_everything(seed, verbose=False)
    net = job.net_with(state)
    task = UnlearnTask(job.data, job.forget, mask, base)
    module = job.unlearner(node, net, task, seed)
    if module.budget is not None:
        module = with_budget(job, node, module, net, task, seed)
    seconds = job.fit(module, stage, mask, logger, ckpt)
    work = {"steps": cost.steps_taken(module), "grad_samples": cost.one_shot_samples(module),
            "max_steps": module.max_steps, "loss_start": module.loss_start, "loss_peak": module.loss_peak}
    return net, seconds, {**module.settings(), **work}


def reference_steps(job: Job, task: UnlearnTask) -> int:
    """The optimiser steps the Retrain reference (`cfg.reference`) takes: epochs x batches."""
    return cost.planned_steps(job.unlearner(job.cfg.reference, job.make_net(), task), job.cfg.trainer.limit_train_batches)


def with_budget(job: Job, node: DictConfig, module: Unlearner, net: nn.Module, task: UnlearnTask,
                seed: int) -> Unlearner:
    """`module` rebuilt with the epochs (and step limit) that spend `budget` x Retrain's steps."""
    limit = job.cfg.trainer.limit_train_batches
    steps_per_epoch = cost.batches_per_epoch(module, limit)
    epochs, max_steps = cost.budget_schedule(module.budget, reference_steps(job, task), steps_per_epoch)
    module = build(node, net=net, task=task, seed=seed, epochs=epochs)
    module.max_steps = max_steps
    log.info("unlearner: budget %g of Retrain's steps: %d epochs%s", module.budget, epochs,
             f", {max_steps} steps" if max_steps else "")
    return module


def reference_kind(job: Job) -> str:
    """Which Retrain reference the run compares with: `retrain_with_mask` (the pruned model's
    mask kept, trained on D_r from its init) or `retrain_then_prune` (dense training on D_r, then
    the same pruner; `unlearner@reference=retrain_then_prune`)."""
    return "retrain_then_prune" if job.cfg.reference.get("then_prune") else "retrain_with_mask"


def reference_model(job: Job, pruned_key: str, state: State, mask: Mask | None, base: BaseWeights,
                    seed: int | None = None, on_all: bool = False) -> Artifact:
    """One Retrain reference model of the store (cached; keyed without `eval.*`): training seed
    `seed` (default the job's). Its meta holds `RTE_s`, `steps` and the loop's `settings`.

    With `on_all`, the same recipe on all of D instead of D_r: an original model of training seed
    `seed` (the per-example tests' untouched original, stage `original_model`).
    """
    seed = job.seed if seed is None else seed
    inputs = reference_inputs(job, pruned_key, seed) | ({"on": "D"} if on_all else {})
    stage = "original_model" if on_all else "reference_model"
    if reference_kind(job) == "retrain_then_prune":
        return _then_prune_model(job, stage, inputs, seed, on_all)
    name = ("original (reference recipe on D)" if on_all else "retrain reference") + (
        "" if seed == job.seed else f" (seed {seed})")
    trained = dataclasses.replace(job, forget=dataclasses.replace(job.forget, retain=job.data.train)) if on_all else job

    def make(work: Path, ckpt: Path) -> dict:
        logger = CSVLogger(work, name="logs", version="")
        net, seconds, settings = unlearn(trained, job.cfg.reference, state, mask, base, name, logger, ckpt, seed)
        save_tensors(_cpu_state(net), work / "model.pt")
        return {"RTE_s": seconds, "steps": settings.pop("steps"), "settings": settings, "seed": seed}

    return job.cache.get_or_build(stage, inputs, make)


def _then_prune_model(job: Job, stage: str, inputs: dict, seed: int, on_all: bool) -> Artifact:
    """Retrain-then-prune: the dense model trained on D_r (on D if `on_all`), then the job's
    pruner (retraining on the same data), both from training seed `seed` and both cached stages
    of their own."""
    seeded = job.reseeded(seed)
    retain = not on_all
    base_art, base = base_stage(seeded, retain=retain)
    prune_art, state, _ = prune_stage(seeded, base_art, base, retain=retain)
    built = prune_art or base_art

    def make(work: Path, ckpt: Path) -> dict:
        save_tensors(state, work / "model.pt")
        seconds = base_art.meta.get("train_seconds", 0.0) + (prune_art.meta["train_seconds"] if prune_art else 0.0)
        settings = {"batch_size": int(job.cfg.train.batch_size), "from": built.key}
        # both trainings' steps; None for artifacts cached before they were recorded
        parts = [base_art.meta.get("steps")] + ([prune_art.meta.get("steps")] if prune_art else [])
        return {"RTE_s": seconds, "steps": None if None in parts else sum(parts), "settings": settings, "seed": seed}

    return job.cache.get_or_build(stage, {**inputs, "from": built.key}, make)


def reference_stage(job: Job, pruned_key: str, state: State, mask: Mask | None, base: BaseWeights) -> Artifact:
    """The Retrain reference (`reference_model` with the job's seed, cached) and its metrics.

    The model is keyed without `eval.*` (evaluation settings never retrain it); its metrics are
    a second entry keyed with them. The returned artifact is the model's, its `meta["metrics"]`
    the metrics with `RTE_s`, `steps` and `batch_size` (for the cost ratios).
    """
    model = reference_model(job, pruned_key, state, mask, base)

    def evaluate_model(work: Path, ckpt: Path) -> dict:
        return {"metrics": job.metrics(job.net_with(load_tensors(model.file("model.pt"))))}

    scored = job.cache.get_or_build("reference", reference_metrics_inputs(job, model.key), evaluate_model)
    model.meta["metrics"] = {**scored.meta["metrics"], "RTE_s": model.meta["RTE_s"], "steps": model.meta["steps"],
                             "batch_size": model.meta["settings"]["batch_size"]}
    return model
