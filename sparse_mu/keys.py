"""Cache keys: what each stage computes from.

Pure functions of the job (tests/test_cache_keys.py): every setting that changes what a stage
computes is in its key, directly or through the key of the stage it starts from; the
`_OPERATIONAL` settings, `fast.*`, loggers, callbacks and paths are in none.
"""

from __future__ import annotations

from sparse_mu.cache import stable_hash
from sparse_mu.data import ForgetSet
from sparse_mu.job import Job, _plain, _without


def forget_key(forget: ForgetSet) -> str:
    return stable_hash(forget.identity())


# eval.damage only judges the metrics afterwards; the per-example settings choose which extra
# models are scored (their own runs and keys), never what a stage computes
NOT_IN_EVAL_KEY = {"damage", "references", "unlearn_seeds", "per_example", "retain_sample"}


def eval_key(job: Job) -> dict:
    evaluation = {k: v for k, v in _plain(job.cfg.eval).items() if k not in NOT_IN_EVAL_KEY}
    return {"eval": evaluation, "forget": forget_key(job.forget), "seed": job.seed}


def unlearn_seed_key(job: Job, seed: int | None = None) -> dict:
    """The unlearning seed, when it differs from the training seed (absent by default, so keys
    from before the seeds were separate axes stay as they were)."""
    seed = job.unlearn_seed if seed is None else seed
    return {} if seed == job.seed else {"unlearn_seed": seed}


def trainer_key(job: Job) -> dict:
    return _without(job.cfg.trainer, "trainer")


def base_inputs(job: Job, retain: bool = False) -> dict:
    """The base stage's key: the data, the architecture, the seed and, when the dense model is
    trained, the training profile and the trainer (D_r instead of D if `retain`), and whether it
    records each sample's confidence (forget=memorised)."""
    data_key = {"dataset": _without(job.cfg.dataset, "dataset"), "fingerprint": job.data.fingerprint}
    inputs = {"data": data_key, "arch": _plain(job.cfg.arch), "seed": job.seed}
    if job.pruner.needs_trained_base:
        inputs |= {"train": _plain(job.cfg.train), "trainer": trainer_key(job)}
    else:
        inputs["init_only"] = True
    if retain:
        inputs["retain_of"] = forget_key(job.forget)
    if job.records_confidence and job.pruner.needs_trained_base:
        # the artifact then holds the confidence record too (same weights): never the forget set
        inputs["record"] = "confidence"
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


def reference_inputs(job: Job, pruned_key: str, seed: int | None = None) -> dict:
    """The Retrain reference model's key: no `eval.*`, so evaluation settings never retrain it
    (its metrics are an entry of their own, `reference_metrics_inputs`). `seed`: the training
    seed of one reference of the store (default: the job's, today's single reference)."""
    return {"pruned": pruned_key, "reference": _plain(job.cfg.reference), "trainer": trainer_key(job),
            "forget": forget_key(job.forget), "seed": job.seed if seed is None else seed}


def reference_metrics_inputs(job: Job, model_key: str) -> dict:
    return {"model": model_key, **eval_key(job)}


def unlearn_inputs(job: Job, pruned_key: str, seed: int | None = None) -> dict:
    """The unlearning run's checkpoint folder (a scratch key: the run itself is never cached).
    With a budget, the epochs follow from the Retrain reference's steps, so its recipe counts."""
    inputs = {"pruned": pruned_key, "unlearner": _plain(job.cfg.unlearner), "trainer": trainer_key(job),
              **eval_key(job), **unlearn_seed_key(job, seed)}
    if job.cfg.unlearner.get("budget") is not None:
        inputs["reference"] = _plain(job.cfg.reference)
    return inputs
