"""The built-in applications on top of the stages (docs/applications.md), registered with
`sparse_mu.extensions`: transfer learning by linear probe (`Transfer`) and un-pruning
(`Unprune`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from sparse_mu.cache import (
    Artifact,
    load_tensors,
    save_tensors,
)
from sparse_mu.config import build
from sparse_mu.data import ImageData, prepare
from sparse_mu.errors import ConfigError, check
from sparse_mu.extensions import Application, Done, application
from sparse_mu.job import Job, State, _cpu_state, _plain, _without, choices
from sparse_mu.keys import eval_key
from sparse_mu.metrics import (
    BACKDOOR_KEYS,
    GAP_KEYS,
    kl_divergence,
)
from sparse_mu.pruning import (
    BaseWeights,
    Dense,
    Mask,
    channel_sparsity,
    iom,
    iou,
    weight_sparsity,
)
from sparse_mu.stages import base_stage, prune_stage, unlearn
from sparse_mu.transfer import LinearProbe, adapt, feature_extractor, features

log = logging.getLogger("sparse_mu")

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
                         "sparsity": 100.0 * weight_sparsity(unpruned),
                         "channel_sparsity": 100.0 * channel_sparsity(unpruned), "RTE_s": round(seconds, 4)},
            "artifacts": {"unpruned": art.key, "unprune_reference": ref_art.key}}


@application
class Transfer(Application):
    """`transfer=linear_probe`: the source models' features probed on a target data set."""

    name = "transfer"

    def setup(self, job: Job) -> None:
        job.target = transfer_target(job)
        # a probe on placeholder features: its settings are checked now, not after the training
        build(job.cfg.transfer.probe, features=torch.zeros(1, 1), labels=torch.zeros(1, dtype=torch.long),
              num_classes=job.target.num_classes)

    def metrics(self, done: Done) -> dict:
        return transfer_metrics(done.job, done.state, done.pruned_key, done.reference, done.net, done.seconds)


@application
class Unprune(Application):
    """`unprune.enabled=true`: the mask re-derived after unlearning the dense model."""

    name = "unprune"

    def setup(self, job: Job) -> None:
        cfg, pruner = job.cfg, job.pruner
        check(pruner.needs_trained_base and not isinstance(pruner, Dense), "pruner",
              "a pruner of the trained dense model (omp, imp, random, n_m, filter_l1) with unprune.enabled=true",
              choices(cfg)["pruner"])
        epochs = cfg.unprune.finetune_epochs
        check(epochs is None or (isinstance(epochs, int) and epochs >= 1), "unprune.finetune_epochs",
              "null (the training profile's epochs) or an integer >= 1", epochs)

    def metrics(self, done: Done) -> dict:
        return unprune_metrics(done.job, done.base_art, done.base, done.mask, done.net)
