"""Sequential deletion requests (`forget=sequential`, docs/forgetting.md): the `sequential`
application, registered with `sparse_mu.extensions`.

The run itself deletes all of D_f at once (its main result). This application then replays the
deletion as `rounds` requests: round r unlearns part r from round r-1's model (round 1 from the
pruned model, the mask kept throughout), sees only the samples of D not deleted before, and is
measured against a Retrain reference trained on D minus parts 1..r. Each reference is a cached
artifact keyed by its cumulative forget set, so round k's is the one-shot run's. metrics.json
gets `sequential: {rounds: [{round, forget_size, UA, RA, TA, MIA_efficacy, disparity_avg,
cost_vs_retrain_*, ...}, ...]}`.
"""

from __future__ import annotations

import dataclasses
import logging

from hydra.utils import get_object
from omegaconf import DictConfig

from sparse_mu import cost
from sparse_mu.cache import Artifact, load_tensors, stable_hash
from sparse_mu.data.sequential import SequentialForget, cumulative, request
from sparse_mu.extensions import Application, Done, application
from sparse_mu.job import Job, State, _cpu_state, _plain
from sparse_mu.keys import unlearn_inputs
from sparse_mu.metrics import GAP_KEYS, disparity_average, gaps
from sparse_mu.stages import reference_stage, unlearn

log = logging.getLogger("sparse_mu")


def round_record(r: int, job: Job, net, seconds: float, settings: dict, reference: Artifact | None,
                 request_size: int) -> dict:
    """Round r's entry: its metrics on the cumulative forget set of `job`, against `reference`."""
    m = job.metrics(net)
    ref = reference.meta["metrics"] if reference is not None else None
    gap = gaps(m, ref) if ref else None
    spent = cost.cost_fields(settings.get("steps"), seconds, settings.get("grad_samples"), ref)
    return {"round": r, "forget_size": len(job.forget.forget), "request_size": request_size,
            **{k: m[k] for k in GAP_KEYS}, "RTE_s": round(seconds, 4),
            "disparity_avg": disparity_average(gap) if gap else None, **spent,
            "retrain": {k: ref[k] for k in (*GAP_KEYS, "RTE_s", "steps")} if ref else None, "gap": gap,
            "reference": reference.key if reference is not None else None}


def rounds(done: Done) -> list[dict]:
    """Every round, in order: unlearn part r from round r-1's weights, evaluate, compare."""
    job, cfg = done.job, done.job.cfg
    whole = job.forget
    state: State = done.state
    start_key = done.pruned_key
    out = []
    for r in range(1, len(whole.parts) + 1):
        after = dataclasses.replace(job, forget=cumulative(job.data, whole, r))  # measured on parts 1..r
        held, part = request(job.data, whole, r)
        asked = dataclasses.replace(job, data=held, forget=part)  # what the unlearner sees
        reference = (reference_stage(after, done.pruned_key, done.state, done.mask, done.base)
                     if cfg.eval.retrain_reference else None)
        if reference is not None and _plain(cfg.unlearner) == _plain(cfg.reference):
            net = job.net_with(load_tensors(reference.file("model.pt")))  # Retrain: this round's reference
            seconds, settings = reference.meta["RTE_s"], {"steps": reference.meta["steps"]}
        else:
            inputs = {**unlearn_inputs(asked, start_key), "round": r}
            with job.cache.scratch("unlearn", inputs) as ckpt:
                net, seconds, settings = unlearn(asked, cfg.unlearner, state, done.mask, done.base,
                                                 f"unlearn round {r}", False, ckpt)
            start_key = stable_hash(inputs)
        out.append(round_record(r, after, net, seconds, settings, reference, len(part.forget)))
        state = _cpu_state(net)
        rec = out[-1]
        log.info("sequential: round %d/%d, |D_f| %d: UA %.2f RA %.2f TA %.2f MIA %.2f%s", r, len(whole.parts),
                 rec["forget_size"], rec["UA"], rec["RA"], rec["TA"], rec["MIA_efficacy"],
                 f", Disparity Avg {rec['disparity_avg']:.2f}" if rec["disparity_avg"] is not None else "")
    return out


@application
class Sequential(Application):
    """`forget=sequential`: the deletion replayed as requests (its settings are the forget node's,
    already in the run's identity)."""

    name = "sequential"

    def enabled(self, cfg: DictConfig) -> bool:
        target = cfg.forget.get("_target_")
        return bool(target) and issubclass(get_object(target), SequentialForget)

    def identity(self, cfg: DictConfig) -> dict:
        return {}

    def metrics(self, done: Done) -> dict:
        return {"sequential": {"rounds": rounds(done)}}
