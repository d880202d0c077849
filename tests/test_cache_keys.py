"""Cache keys: every setting that changes what a stage computes changes that stage's key (and the
keys of the stages built on it); operational settings and unrelated groups change none.

Keys are computed from a `setup` job without training (`pipeline.*_inputs`), chained exactly as
`pipeline.run` chains them; `test_the_keys_are_the_ones_the_run_uses` pins that chaining.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from sparse_mu import job as job_module
from sparse_mu import keys as key_inputs
from sparse_mu import pipeline
from sparse_mu.models import SmallCNN
from sparse_mu.pruning import Dense, Mask, export_published, prunable_weights
from tests.conftest import TINY, compose_cfg

STAGES = ("base", "prune", "original", "reference", "reference_metrics", "unlearn")
# Trainer settings the default config does not set but a user may (each changes the training).
EXTRA_TRAINER = {"accumulate_grad_batches": 2, "num_nodes": 2, "sync_batchnorm": True,
                 "gradient_clip_algorithm": "value", "max_steps": 7}
# Groups that change no stage's key: how loops are run, shown, stored (or other stages' settings).
OPERATIONAL_GROUPS = ("fast", "logger", "callbacks", "paths", "unprune")
OPERATIONAL_TOP = {"checkpoint_every": 3, "gpu_per_job": False}


def stage_keys(job: pipeline.Job) -> dict[str, str]:
    """Each stage's cache key for `job`, chained as `pipeline.run` chains them."""
    key = job.cache.key
    base = key(key_inputs.base_inputs(job))
    pruned = base if isinstance(job.pruner, Dense) else key(key_inputs.prune_inputs(job, base))
    reference = key(key_inputs.reference_inputs(job, pruned))
    return {"base": base, "prune": pruned, "original": key(key_inputs.original_inputs(job, pruned)),
            "reference": reference, "reference_metrics": key(key_inputs.reference_metrics_inputs(job, reference)),
            "unlearn": key(key_inputs.unlearn_inputs(job, pruned))}


def depends(group: str, job: pipeline.Job) -> set[str]:
    """The stages whose key must change when a setting of `group` changes."""
    trained = job.pruner.needs_trained_base
    after_base = {"prune", "original", "reference", "reference_metrics", "unlearn"}
    return {
        "dataset": set(STAGES), "arch": set(STAGES), "seed": set(STAGES),
        # an init-only base model is not trained: only the pruner's retraining uses these
        "train": set(STAGES) if trained else after_base,
        "trainer": set(STAGES) if trained else after_base,
        "pruner": set() if isinstance(job.pruner, Dense) else after_base,  # dense: no prune stage
        # the Retrain model is keyed without eval.*: evaluation settings never retrain it
        "eval": {"original", "reference_metrics", "unlearn"},
        "forget": {"original", "reference", "reference_metrics", "unlearn"},
        "reference": {"reference", "reference_metrics"},
        "unlearner": {"unlearn"},
    }[group]


def changed(value):
    """A different value of the same kind (validity does not matter: keys are computed, not run)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    return 1  # None


def leaves(node, prefix: str) -> list[str]:
    """Dotted paths of every leaf of a config node."""
    out = []
    for k, v in node.items():
        path = f"{prefix}.{k}"
        out += leaves(v, path) if isinstance(v, dict) else [path]
    return out


def mutated(job: pipeline.Job, path: str, value) -> pipeline.Job:
    cfg = job.cfg.copy()
    with open_dict(cfg):
        OmegaConf.update(cfg, path, value, merge=False)
    return dataclasses.replace(job, cfg=cfg)


def computing_settings(job: pipeline.Job) -> list[tuple[str, str, object]]:
    """(group, path, new value) for every setting of the groups that stages compute from."""
    cfg, out = job.cfg, [("seed", "seed", job.seed + 1)]
    for group in ("dataset", "arch", "train", "pruner", "unlearner", "reference", "eval", "trainer"):
        skip = job_module._OPERATIONAL.get(group, set()) | ({"path"} if group == "pruner" else set())
        # damage judges finished metrics; the per-example settings pick extra models: operational below
        skip |= key_inputs.NOT_IN_EVAL_KEY if group == "eval" else set()
        plain = OmegaConf.to_container(cfg[group], resolve=True)
        out += [(group, p, changed(OmegaConf.select(cfg, p))) for p in leaves(plain, group)
                if p.split(".")[1] not in skip]
    out += [("trainer", f"trainer.{k}", v) for k, v in EXTRA_TRAINER.items()]
    return out


def operational_settings(job: pipeline.Job) -> list[tuple[str, object]]:
    cfg = job.cfg
    out = [(f"{g}.{k}", "/elsewhere" if g == "dataset" else changed(OmegaConf.select(cfg, f"{g}.{k}")))
           for g, names in job_module._OPERATIONAL.items() for k in sorted(names)]
    for group in OPERATIONAL_GROUPS:
        plain = OmegaConf.to_container(cfg[group], resolve=True)
        out += [(p, changed(OmegaConf.select(cfg, p))) for p in leaves(plain, group)]
    out += [(p, changed(OmegaConf.select(cfg, p))) for p in leaves(OmegaConf.to_container(cfg.eval.damage), "eval.damage")]
    out += [(f"eval.{k}", changed(cfg.eval[k])) for k in sorted(key_inputs.NOT_IN_EVAL_KEY - {"damage"})]
    out.append(("unlearn_seed", job.seed))  # the unlearning seed spelled out as the training seed's
    return out + list(OPERATIONAL_TOP.items())


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    torch.manual_seed(3)
    net = SmallCNN(10, 1, 8, width=8)
    mask = Mask.from_scores({k: torch.rand(w.shape) for k, w in prunable_weights(net).items()}, 0.6)
    path = tmp_path_factory.mktemp("published") / "model.pth.tar"
    export_published(mask.apply_(net).state_dict(), mask, path)
    return path


PRUNERS = {
    "dense": ["pruner=dense"],
    "omp": ["pruner=omp"],
    "imp": ["pruner=imp", "pruner.rounds=2", "pruner.sparsity=null"],
    "random": ["pruner=random"],
    "random_init": ["pruner=random", "pruner.rewind=init"],  # pruning at initialisation
    "synflow": ["pruner=synflow"],
    "checkpoint": ["pruner=checkpoint", "arch.width=8"],
}


def make_job(tmp_path, overrides, checkpoint_file=None) -> pipeline.Job:
    extra = [f"pruner.path={checkpoint_file}"] if "pruner=checkpoint" in overrides else []
    return pipeline.setup(compose_cfg([*TINY, *overrides, *extra], tmp_path), tmp_path / "out")


@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_every_computing_setting_changes_the_key_of_every_stage_that_uses_it(pruner, tmp_path, checkpoint_file):
    job = make_job(tmp_path, PRUNERS[pruner], checkpoint_file)
    before = stage_keys(job)
    wrong = []
    settings = computing_settings(job)
    for group, path, value in settings:
        after = stage_keys(mutated(job, path, value))
        must = depends(group, job) - ({"prune"} if pruner == "dense" else set())
        for stage in STAGES:
            moved = after[stage] != before[stage]
            if stage in must and not moved:
                wrong.append(f"{path}={value!r} leaves the {stage} key unchanged")
            if stage not in must and moved and not (pruner == "dense" and stage == "prune"):
                wrong.append(f"{path}={value!r} changes the {stage} key")
    assert not wrong, "\n".join(wrong)
    # the settings the issue names are among those checked
    paths = {p for _, p, _ in settings}
    assert {"trainer.limit_train_batches", "trainer.gradient_clip_val", "trainer.precision", "trainer.devices",
            "trainer.accumulate_grad_batches", "trainer.deterministic"} <= paths


@pytest.mark.parametrize("pruner", ["omp", "synflow", "checkpoint"])
def test_operational_settings_change_no_key(pruner, tmp_path, checkpoint_file):
    job = make_job(tmp_path, PRUNERS[pruner], checkpoint_file)
    before = stage_keys(job)
    settings = operational_settings(job)
    changed_keys = [f"{path}={value!r}: {stage}" for path, value in settings
                    for stage, key in stage_keys(mutated(job, path, value)).items() if key != before[stage]]
    assert not changed_keys, changed_keys
    assert {"fast.channels_last", "fast.compile", "trainer.enable_progress_bar", "checkpoint_every",
            "paths.cache_dir", "eval.references", "eval.unlearn_seeds"} <= {p for p, _ in settings}


def test_pruner_objects_in_the_keys(tmp_path, checkpoint_file):
    """What the pruner object contributes beyond its config: whether the base model is trained
    (random's rewind), and the checkpoint file's bytes."""
    keys = {name: stage_keys(make_job(tmp_path, PRUNERS[name], checkpoint_file)) for name in ("random", "random_init")}
    assert keys["random"]["base"] != keys["random_init"]["base"]  # trained vs init-only base model
    synflow = stage_keys(make_job(tmp_path, PRUNERS["synflow"]))
    assert synflow["base"] == keys["random_init"]["base"]  # one init-only base model for both

    first = stage_keys(make_job(tmp_path, PRUNERS["checkpoint"], checkpoint_file))
    other = checkpoint_file.with_name("other.pth.tar")
    state = torch.load(checkpoint_file, weights_only=True)
    state["state_dict"] = {k: v * 2 if k.endswith("_orig") else v for k, v in state["state_dict"].items()}
    torch.save(state, other)
    second = stage_keys(make_job(tmp_path, PRUNERS["checkpoint"], other))
    assert all(first[s] != second[s] for s in ("prune", "original", "reference", "unlearn"))


@pytest.mark.parametrize("overrides", [["forget.class_idx=1"], ["forget=random", "forget.count=50"],
                                       ["forget=random", "forget.count=50", "forget.seed=1"]])
def test_the_forget_set_is_in_every_key_after_pruning_and_none_before(overrides, tmp_path):
    base, other = stage_keys(make_job(tmp_path, [])), stage_keys(make_job(tmp_path, overrides))
    assert base["base"] == other["base"] and base["prune"] == other["prune"]
    assert all(base[s] != other[s] for s in ("original", "reference", "unlearn"))


def test_the_keys_are_the_ones_the_run_uses(tmp_path):
    """A run with an init-only pruner stores its artifacts under exactly `stage_keys`."""
    overrides = ["pruner=synflow", "pruner.iterations=3", "arch.width=8", "train.epochs=1", "train.rewind_epoch=0",
                 "reference.epochs=1", "unlearner.epochs=1", "trainer.limit_train_batches=2"]
    cfg = compose_cfg([*TINY, *overrides], tmp_path)
    m = pipeline.run(cfg, tmp_path / "run")
    keys = stage_keys(pipeline.setup(compose_cfg([*TINY, *overrides], tmp_path), tmp_path / "out"))
    assert m["artifacts"] == {"base": keys["base"], "pruned": keys["prune"], "reference": keys["reference"]}
    assert (tmp_path / "cache" / "original" / keys["original"] / "meta.json").is_file()
    assert not math.isnan(m["UA"])


def test_memorised_forget_sets_share_one_base_model_and_key_every_stage_after_it(tmp_path):
    """forget=memorised: D_f is ranked from the base model's record, so the base key (and the
    prune key) never depend on the forget setting; the set chosen keys every later stage."""
    most = make_job(tmp_path, ["forget=memorised", "forget.count=40"])
    least = make_job(tmp_path, ["forget=memorised", "forget.order=least", "forget.fraction=0.2"])
    plain = stage_keys(make_job(tmp_path, []))
    assert stage_keys(most)["base"] == stage_keys(least)["base"] != plain["base"]  # + the record, same weights
    n = len(most.data.y)
    record = {"sum": torch.rand(n, generator=torch.Generator().manual_seed(0)), "count": torch.ones(n)}
    chosen = [dataclasses.replace(j, forget=j.forget_spec.select(j.data, record)) for j in (most, least)]
    a, b = stage_keys(chosen[0]), stage_keys(chosen[1])
    assert a["base"] == b["base"] and a["prune"] == b["prune"]
    assert all(a[s] != b[s] for s in ("original", "reference", "reference_metrics", "unlearn"))
    assert a["reference"] != stage_keys(most)["reference"]  # the chosen set, not setup's stand-in


def test_sequential_requests_key_their_one_shot_deletion_as_the_same_forget_set_does(tmp_path):
    """The main result of forget=sequential is the one-shot deletion: keyed as forget=random with
    the same D_f (so it reuses that run's Retrain reference), however many rounds."""
    one_shot = stage_keys(make_job(tmp_path, ["forget=random", "forget.count=50"]))
    for rounds in (2, 5):
        assert stage_keys(make_job(tmp_path, ["forget=sequential", "forget.count=50", f"forget.rounds={rounds}"])) == one_shot
