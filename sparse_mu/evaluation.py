"""Per-example evaluation against a store of Retrain references (docs/evaluation.md).

An application unit (`sparse_mu.extensions`), on when `eval.references > 1` (or
`eval.per_example=true`). It gathers
- the reference store: `eval.references` Retrain models of the run's (pruned model, forget set),
  training seeds `seed, seed + 1, ...`, each a cached `reference_model` artifact (built once,
  reused by every method, sweep and metric; keyed without `eval.*`);
- `eval.unlearn_seeds` unlearned models: the run's own (unlearning seed `unlearn_seed`) and
  the unlearner run again with seeds `unlearn_seed + 1, ...` (the experiment: never cached);
- as many original models (nothing unlearned): the reference's recipe on all of D instead of D_r,
  training seeds `seed, seed + 1, ...` (cached `original_model` artifacts). The pruned model
  itself is one model, a point mass that any per-example test tells from anything else, on D_r
  as well as on D_f; seeded originals vary as the references do, so D_r stays the control;
and scores each kind against the references with `sparse_mu.metrics.per_example` on D_f, a
seeded sample of D_r (`eval.retain_sample`) and the test set (`score`, a pure function).
"""

from __future__ import annotations

import logging
import time

import torch

from sparse_mu.cache import load_tensors
from sparse_mu.errors import check
from sparse_mu.extensions import Application, Done, application
from sparse_mu.fast import autocast
from sparse_mu.job import Job, State, _cpu_state, _plain
from sparse_mu.metrics import per_example as pe
from sparse_mu.stages import reference_kind, reference_model, unlearn

log = logging.getLogger("sparse_mu")

PARTS = ("forget", "retain", "test")
ATTACKED = ("forget", "retain")  # U-LiRA and the challenge's F: D_f, and D_r as the control


def per_example_on(cfg) -> bool:
    ev = cfg.eval
    on = ev.get("per_example")
    return bool(on) if on is not None else int(ev.get("references", 1)) > 1


def seeds(job: Job) -> tuple[list[int], list[int]]:
    """The references' training seeds and the unlearned models' unlearning seeds."""
    ev = job.cfg.eval
    return ([job.seed + j for j in range(int(ev.references))],
            [job.unlearn_seed + j for j in range(int(ev.unlearn_seeds))])


@torch.inference_mode()
def logits(job: Job, state: State, indices: torch.Tensor) -> torch.Tensor:
    """Raw outputs (float64, CPU) of the model with weights `state` on `indices`, eval transforms."""
    net = job.net_with(state).to(job.device).eval()
    out = []
    for x, _, _ in job.data.loader(indices, batch_size=job.eval_batch_size, train=False, device=job.device):
        with autocast(x.device, job.precision):
            out.append(net(x).double().cpu())
    return torch.cat(out)


def _accuracy(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over models of top-1 accuracy (percent); z is [models, examples, classes]."""
    return 100.0 * float((z.argmax(-1) == labels).double().mean())


def _pairs_mean(fn, a: list, b: list) -> float:
    return sum(fn(x, y) for x, y in zip(a, b, strict=False)) / min(len(a), len(b))


def score(unlearned: dict[str, torch.Tensor], retrained: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
          u_states: list[State], r_states: list[State]) -> dict[str, float]:
    """Every per-example metric of one kind of model against the references.

    `unlearned[part]` and `retrained[part]` are logits [models, examples, classes] on the same
    examples of each part (forget, retain, test); `u_states` / `r_states` the models' weights in
    the same order. Distances (JS, activation, weight L2) are means over pairs (u_j, r_j).
    """
    out: dict[str, float] = {}
    sc = {p: (pe.scaled_confidence(unlearned[p], labels[p]), pe.scaled_confidence(retrained[p], labels[p]))
          for p in ATTACKED}
    for p in ATTACKED:
        out |= {f"{p}_{k}": v for k, v in pe.ulira(*sc[p]).items()}
        out[f"{p}_F"] = pe.forgetting_quality(*sc[p])
    for p in PARTS:
        margins = (pe.margins(unlearned[p], labels[p]), pe.margins(retrained[p], labels[p]))
        out[f"{p}_klom"] = float(pe.klom(*margins).mean())
        pu, pr = unlearned[p].softmax(-1), retrained[p].softmax(-1)
        out[f"{p}_js"] = _pairs_mean(pe.js_divergence, list(pu), list(pr))
        out[f"{p}_act"] = _pairs_mean(pe.activation_distance, list(pu), list(pr))
    out["weight_l2"] = _pairs_mean(pe.weight_distance, u_states, r_states)
    acc = {f"{k}_{who}": _accuracy(z[part], labels[part]) for k, part in (("RA", "retain"), ("TA", "test"))
           for who, z in (("u", unlearned), ("r", retrained))}
    out |= acc
    out["score"] = pe.challenge_score(out["forget_F"], acc["RA_u"], acc["RA_r"], acc["TA_u"], acc["TA_r"])
    return out


def _retain_sample(job: Job) -> torch.Tensor:
    retain = job.forget.retain
    k = min(int(job.cfg.eval.retain_sample), len(retain))
    g = torch.Generator().manual_seed(job.seed)
    return retain[torch.randperm(len(retain), generator=g)[:k]].sort().values


def store(done: Done, ref_seeds: list[int], on_all: bool = False) -> list[State]:
    """The reference store's weights, training seeds `ref_seeds` (each built once, then cached);
    with `on_all`, the original models of those seeds."""
    job, states = done.job, []
    for s in ref_seeds:
        if s == job.seed and done.reference is not None and not on_all:
            art = done.reference
        else:
            art = reference_model(job, done.pruned_key, done.state, done.mask, done.base, s, on_all)
        states.append(load_tensors(art.file("model.pt")))
    return states


def unlearned_models(done: Done, un_seeds: list[int], ref_seeds: list[int], refs: list[State]) -> list[State]:
    """The run's unlearned model and the unlearner run again with the other unlearning seeds. A
    Retrain unlearner whose seed is a reference's training seed is that reference (reused)."""
    job = done.job
    same = _plain(job.cfg.unlearner) == _plain(job.cfg.reference) and reference_kind(job) == "retrain_with_mask"
    states = [_cpu_state(done.net)]
    for s in un_seeds[1:]:
        if same and s in ref_seeds:
            states.append(refs[ref_seeds.index(s)])
            continue
        net, _, _ = unlearn(job, job.cfg.unlearner, done.state, done.mask, done.base, f"unlearn (seed {s})",
                            False, None, s)
        states.append(_cpu_state(net))
    return states


def per_example_metrics(done: Done) -> dict:
    """metrics.json's `per_example` (the unlearned models), `per_example_original` (the
    untouched original) and `per_example_seeds`."""
    job, start = done.job, time.perf_counter()
    ref_seeds, un_seeds = seeds(job)
    refs = store(done, ref_seeds)
    unlearned = unlearned_models(done, un_seeds, ref_seeds, refs)
    parts = {"forget": job.forget.forget, "retain": _retain_sample(job), "test": job.data.test}
    originals = store(done, [job.seed + j for j in range(len(un_seeds))], on_all=True)
    outs = {who: {p: torch.stack([logits(job, s, idx) for s in states]) for p, idx in parts.items()}
            for who, states in (("u", unlearned), ("r", refs), ("o", originals))}
    labels = {p: _labels(job, idx) for p, idx in parts.items()}
    m = len(unlearned)
    result = score(outs["u"], outs["r"], labels, unlearned, refs)
    # the floor: each reference against the next one (what two Retrain models differ by)
    nxt = refs[1:] + refs[:1]
    result["floor_weight_l2"] = _pairs_mean(pe.weight_distance, refs, nxt)
    for p in PARTS:
        pr = outs["r"][p].softmax(-1)
        rolled = pr.roll(1, 0)
        result[f"floor_{p}_js"] = _pairs_mean(pe.js_divergence, list(pr), list(rolled))
        result[f"floor_{p}_act"] = _pairs_mean(pe.activation_distance, list(pr), list(rolled))
    base = score(outs["o"], outs["r"], labels, originals, refs)
    kind = reference_kind(job)
    log.info("per-example (%s, %d references, %d unlearning seeds): D_f U-LiRA AUC %.1f, F %.3f, KLOM %.3f "
             "(original: AUC %.1f, F %.3f, KLOM %.3f)", kind, len(refs), m, result["forget_ulira_auc"],
             result["forget_F"], result["forget_klom"], base["forget_ulira_auc"], base["forget_F"],
             base["forget_klom"])
    result["seconds"] = round(time.perf_counter() - start, 3)
    return {"per_example": {"reference": kind, "references": len(refs), "unlearn_seeds": m, **result},
            "per_example_original": {"reference": kind, **base},
            "per_example_seeds": {"references": ref_seeds, "unlearned": un_seeds}}


def _labels(job: Job, indices: torch.Tensor) -> torch.Tensor:
    """The labels of `indices`, in the eval loader's order."""
    ys = [y.cpu() for _, y, _ in job.data.loader(indices, batch_size=job.eval_batch_size, train=False, device="cpu")]
    return torch.cat(ys)


@application
class PerExample(Application):
    """`eval.references > 1` (or `eval.per_example=true`): per-example tests against the store."""

    name = "per_example"

    def enabled(self, cfg) -> bool:
        return per_example_on(cfg)

    def setup(self, job: Job) -> None:
        ev = job.cfg.eval
        why = "with per-example tests (eval.references > 1 or eval.per_example=true)"
        check(bool(ev.retrain_reference), "eval.retrain_reference", f"true {why}", ev.retrain_reference)
        check(int(ev.references) >= 3, "eval.references", f">= 3 {why}: U-LiRA fits leave-one-out Gaussians",
              ev.references)
        check(int(ev.unlearn_seeds) >= 3, "eval.unlearn_seeds", f">= 3 {why}: U-LiRA fits leave-one-out Gaussians",
              ev.unlearn_seeds)

    def identity(self, cfg) -> dict:
        ev = cfg.eval
        return {"per_example": {k: int(ev[k]) for k in ("references", "unlearn_seeds", "retain_sample")}}

    def metrics(self, done: Done) -> dict:
        return per_example_metrics(done)
