"""The run: data split -> base model -> forget set -> pruned model -> unlearning -> evaluation.

Every stage is a function of its config and the stages before it. The base model, the pruned
model, the original model's metrics and the Retrain reference are cached (`sparse_mu.cache`)
under a hash of exactly those inputs, so a sweep trains each base model once and computes each
Retrain reference once per (mask, forget set, seed). The unlearning run itself is the
experiment and always runs. Every training loop checkpoints each epoch and an interrupted run
resumes from its last checkpoint when rerun.

The flow reads top to bottom in `run`; the pieces live beside it: `sparse_mu.job` (the `Job`:
one run's resolved inputs), `sparse_mu.keys` (each stage's cache key), `sparse_mu.stages` (the
cached stages and the unlearning loop) and `sparse_mu.applications` (transfer learning and
un-pruning, docs/applications.md), each a unit registered in `sparse_mu.extensions`. Backdoor forgetting poisons the data in `setup` and adds
SA/ASR to every evaluation.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sparse_mu import cost
from sparse_mu.cache import (
    Artifact,
    ArtifactCache,
    global_rank,
    load_tensors,
    stable_hash,
    write_json,
)
from sparse_mu.config import build
from sparse_mu.data import prepare
from sparse_mu.errors import ConfigError, check
from sparse_mu.extensions import Done, enabled
from sparse_mu.failures import save_results
from sparse_mu.job import (
    GROUPS,
    Job,
    _cpu_state,
    _plain,
    choices,
    device_name,
    pick_device,
    resolve_speed_settings,
)
from sparse_mu.keys import unlearn_inputs, unlearn_seed_key
from sparse_mu.loggers import finish_loggers, job_loggers, log_stage_curves
from sparse_mu.metrics import (
    BACKDOOR_KEYS,
    GAP_KEYS,
    disparity_average,
    gaps,
)
from sparse_mu.pruning import (
    BaseWeights,
    flops_report,
    layer_sparsity,
    weight_sparsity,
)
from sparse_mu.stages import (
    base_stage,
    forget_stage,
    original_stage,
    prune_stage,
    reference_kind,
    reference_stage,
    unlearn,
)
from sparse_mu.unlearn import UnlearnTask
from sparse_mu.validation import validate

log = logging.getLogger("sparse_mu")

def setup(cfg: DictConfig, out_dir: Path) -> Job:
    """Instantiate and check every component before any training: bad input fails here."""
    validate(cfg)  # every setting's type, and unknown keys (sparse_mu.validation)
    check(isinstance(cfg.reference, DictConfig), "reference",
          "a Retrain reference chosen as unlearner@reference=NAME (retrain, retrain_then_prune)", cfg.reference)
    L.seed_everything(int(cfg.seed), verbose=False)
    device = pick_device(cfg)
    resolve_speed_settings(cfg, device)
    source = build(cfg.dataset)
    pruner = build(cfg.pruner)
    forget_spec = build(cfg.forget)
    data = forget_spec.training_data(prepare(source))
    forget = forget_spec.draft(data)  # forget=memorised: a stand-in until the base model has trained
    if len(forget.forget) == 0 or len(forget.retain) == 0:
        raise ConfigError(f"forget: the forget set has {len(forget.forget)} and the retain set "
                          f"{len(forget.retain)} samples; both must be non-empty")
    if forget_spec.needs_record and not pruner.needs_trained_base:
        raise ConfigError(f"forget=memorised ranks D by the trained base model's confidence; pruner="
                          f"{choices(cfg)['pruner']} trains none (use a pruner of the trained model: omp, imp, dense, ...)")
    if int(cfg.checkpoint_every) < 0:
        raise ConfigError(f"checkpoint_every must be >= 0 (0 = no checkpoints); got {cfg.checkpoint_every}")
    check(not cfg.unlearner.get("then_prune"), "unlearner.then_prune",
          "false (unlearner=retrain_then_prune: that is a Retrain reference only, unlearner@reference=retrain_then_prune)",
          cfg.unlearner.get("then_prune"))
    job = Job(cfg, out_dir, data, forget, pruner, ArtifactCache(cfg.paths.cache_dir), device,
              forget_spec=forget_spec)
    net = job.make_net()
    pruner.validate(net)
    job.train_profile(net)
    for app in enabled(cfg):  # each application's own checks (sparse_mu.extensions)
        app.setup(job)
    init = _cpu_state(net)
    trained = init if pruner.needs_trained_base else None
    task = UnlearnTask(data, forget, None, BaseWeights(init, trained, trained))
    job.unlearner(cfg.unlearner, job.make_net(), task)
    if cfg.eval.retrain_reference:
        job.unlearner(cfg.reference, job.make_net(), task)
    return job


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
        write_json(out_dir / "split_indices.json", {k: getattr(job.data, k).tolist() for k in ("train", "val", "test")})
    log.info("data: %s, |D|=%d (forget %d, retain %d), val %d, test %d, device %s", job.data.name,
             len(job.data.train), len(job.forget.forget), len(job.forget.retain), len(job.data.val),
             len(job.data.test), device_name(job.device))

    base_art, base = base_stage(job)  # trained on all of D: it never depends on D_f
    job.forget = forget_stage(job, base_art)  # forget=memorised ranks D by the base model's record
    if rank0:
        write_json(out_dir / "forget_indices.json", job.forget.to_json())
    prune_art, state, mask = prune_stage(job, base_art, base)
    pruned_key = prune_art.key if prune_art else base_art.key
    reference = reference_stage(job, pruned_key, state, mask, base) if cfg.eval.retrain_reference else None
    original = original_stage(job, pruned_key, state)

    loggers = job_loggers(cfg, out_dir, choices(cfg)) if rank0 else []
    log_stage_curves(loggers, {"base": base_art.path, "prune": prune_art and prune_art.path,
                               "reference": reference and reference.path})
    metrics: dict = {}
    try:
        if reference is not None and _plain(cfg.unlearner) == _plain(cfg.reference) and job.unlearn_seed == job.seed:
            log.info("unlearner: identical to the Retrain reference; reusing it (RTE from its build)")
            net = job.net_with(load_tensors(reference.file("model.pt")))
            seconds = reference.meta["RTE_s"]
            settings = {**reference.meta["settings"], "steps": reference.meta["steps"]}
        else:
            with job.cache.scratch("unlearn", unlearn_inputs(job, pruned_key)) as ckpt:
                net, seconds, settings = unlearn(job, cfg.unlearner, state, mask, base, "unlearn",
                                                 loggers or False, ckpt)
        metrics = assemble(job, net, seconds, settings, original, reference, pruned_key, base_art)
        done = Done(job, base_art, base, state, mask, pruned_key, reference, net, seconds)
        for app in enabled(cfg):
            extra = app.metrics(done)
            metrics["artifacts"] |= extra.pop("artifacts", {})
            metrics |= extra
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
    identity = {k: _plain(cfg[k]) for k in GROUPS} | {"seed": job.seed} | unlearn_seed_key(job)
    for app in enabled(cfg):
        identity |= app.identity(cfg)
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
        **flops_report(net, net.input_shape),
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
        "unlearn_seed": job.unlearn_seed,
        "reference_kind": reference_kind(job) if ref else None,
        **{k: names[k] for k in ("dataset", "arch", "pruner", "unlearner", "forget")},
        "forget_size": len(job.forget.forget),
        "class_idx": job.forget.class_idx,
        "target_sparsity": 100.0 * float(getattr(job.pruner, "sparsity", 0.0)),
        "hparams": settings,
        "artifacts": {"base": base_art.key, "pruned": pruned_key, "reference": reference.key if reference else None},
    }
