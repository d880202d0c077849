"""Run folders -> one row per run, and which runs are repeats (seeds) of one experiment.

Runs pool (mean ± std) only when every config value that matters is the same; the seed is the
one thing allowed to differ. A row of the report is therefore identified by the base keys
(data set, model, forgetting, method, pruner, sparsity) plus every config value that differs
between the runs, except the seeds and the operational settings below.
"""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
import yaml

from sparse_mu.metrics import NESTED
from sparse_mu.report.columns import FLAG

# Settings that change how a run is carried out or recorded, never its numbers: runs that differ
# only in these pool. Everything else in config.yaml (data paths included: dataset.path names
# the data) splits rows. Patterns over the dotted config keys and the Hydra group choices.
OPERATIONAL = (
    "paths.*",  # where data, cache and outputs live
    "logger.*",
    "logger",  # CSV / W&B logging
    "callbacks.progress.*",  # the console progress bar or log lines
    "hydra",
    "hydra.*",
    "hydra/*",  # Hydra's own settings: launcher, output dirs, logging
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.enable_checkpointing",  # Lightning's own checkpoints (resume uses ours)
    "checkpoint_every",  # resumable checkpoints: a resumed run has identical metrics
    "gpu_per_job",  # which GPU a job takes, not what it computes
    "tune.*",  # what a job returns to a tuning study (sparse_mu/tune.py), not its metrics
    "*workers",  # data-loading processes
    "*.download",  # fetching a data set
)
# The seed(s): never part of a row's identity. A config value equal to the seed in every run
# (forget.seed = ${seed}) is derived from it and is dropped too.
SEED = "seed"
# The unlearning seed (`unlearn_seed`, null = the training seed): pooled like the seed; the
# summary's std is over training seeds (each one's mean over its unlearning seeds) and
# `<metric>_std_unlearn` the mean spread over unlearning seeds within a training seed.
UNLEARN_SEED = "unlearn_seed"
# Not config, but recorded per run and they change the numbers (RTE above all): never pooled.
RECORDED = ("device", "precision")
# The metrics.json keys that name the chosen options; with the target sparsity they are the
# base of every row.
BASE = ("dataset", "arch", "forget", "unlearner", "pruner", "target_sparsity")
# Hydra group choices (from .hydra/hydra.yaml) that may name a row instead of the config values
# they set (`debug=fast` rather than `train.epochs=2, ...`); never used to split rows.
LABEL_CHOICES = ("experiment", "tuning", "debug", "train", "trainer", "transfer")
REQUIRED = (*BASE, "seed")


class Unreadable(Exception):
    """A run folder whose metrics.json or config.yaml cannot be read."""


def _load(path: Path, parse) -> dict:
    try:
        value = parse(path.read_text())
    except FileNotFoundError:
        raise Unreadable(f"{path.name} missing") from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise Unreadable(f"{path.name}: {type(e).__name__}: {first}") from None
    if not isinstance(value, dict):
        raise Unreadable(f"{path.name}: not a mapping")
    return value


def _choices(run_dir: Path) -> dict:
    """Hydra's group choices of the run ({} outside Hydra or when unreadable: they only name
    rows)."""
    try:
        hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        return dict(hydra["hydra"]["runtime"]["choices"])
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return {}


def _flag(value) -> bool:
    """`damaged` in metrics.json: a bool (its reasons are in `damage`)."""
    return bool(value)


def _metrics_row(m: dict) -> dict:
    row = {k: v for k, v in m.items() if not isinstance(v, dict)}
    for nested in NESTED:
        row.update({f"{nested}.{k}": v for k, v in (m.get(nested) or {}).items()})
    if FLAG in m:
        row[FLAG] = _flag(m[FLAG])
    return row


def _text(v) -> str:
    """A config value as it is compared and shown (lists and None included)."""
    if isinstance(v, float) and v != v:  # NaN: the run has no such key
        return "unset"
    if v is None or isinstance(v, bool | list | dict):
        return json.dumps(v)
    return str(v)


def collect(root: Path) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    """The finished runs below `root` (one row each: flattened metrics.json, `config.<key>` for
    every resolved config value, `choice.<group>` for Hydra's choices), the failed runs, and the
    unreadable ones (metrics.json or config.yaml missing keys, truncated or garbage)."""
    root = Path(root)
    rows, configs, unreadable = [], [], []
    for path in sorted(root.rglob("metrics.json")):
        run_dir = str(path.parent.relative_to(root))
        try:
            m = _load(path, json.loads)
            if missing := [k for k in REQUIRED if k not in m]:
                raise Unreadable(f"metrics.json: no {', '.join(missing)}")
            cfg = _load(path.parent / "config.yaml", yaml.safe_load)
        except Unreadable as e:
            unreadable.append({"run_dir": run_dir, "error": str(e)})
            continue
        choices = {f"choice.{k}": _text(v) for k, v in _choices(path.parent).items()}
        rows.append(_metrics_row(m) | choices | {"run_dir": run_dir})
        configs.append(cfg)
    failed = []
    for path in sorted(root.rglob("FAILED")):
        if not (path.parent / "metrics.json").exists():
            lines = [
                ln for ln in path.read_text(errors="replace").strip().splitlines() if ln.strip()
            ]
            overrides = path.parent / ".hydra" / "overrides.yaml"
            failed.append(
                {
                    "run_dir": str(path.parent.relative_to(root)),
                    "error": lines[-1] if lines else "",
                    "overrides": overrides.read_text(errors="replace").strip()
                    if overrides.exists()
                    else "",
                }
            )
    if not rows:
        return pd.DataFrame(), failed, unreadable
    runs = pd.DataFrame(rows)
    if FLAG in runs:
        runs[FLAG] = runs[FLAG].fillna(False).astype(bool)
    config = pd.json_normalize(configs, sep=".").map(_text).add_prefix("config.")
    return pd.concat([runs, config], axis=1), failed, unreadable


def _operational(column: str) -> bool:
    key = column.split(".", 1)[1]
    return any(fnmatch(key, pattern) for pattern in OPERATIONAL)


def identity(runs: pd.DataFrame) -> list[str]:
    """The columns, besides BASE, whose values differ between runs and keep them apart: config
    values (less seeds and OPERATIONAL) and the RECORDED device and precision."""
    config = [c for c in runs if c.startswith("config.") and not _operational(c) and c != f"config.{UNLEARN_SEED}"]
    seed = runs.get(f"config.{SEED}")
    derived = [c for c in config if seed is not None and runs[c].eq(seed).all()]
    candidates = [c for c in config if c not in derived] + [k for k in RECORDED if k in runs]
    return [c for c in candidates if runs[c].nunique(dropna=False) > 1]


def _determined(runs: pd.DataFrame, column: str, by: list[str]) -> bool:
    """Whether `by` fixes `column` (grouping by both gives no more groups than by `by`)."""
    n = runs.groupby(by, dropna=False, sort=False).ngroups
    return runs.groupby([*by, column], dropna=False, sort=False).ngroups == n


def shown(runs: pd.DataFrame) -> list[str]:
    """The identity columns a reader needs to tell the rows apart: each one that the base keys and
    the ones before it do not already fix (so `train.epochs`, copied into `reference.epochs` by
    interpolation, is shown once, and the tuned values of each method not at all). A Hydra choice
    (LABEL_CHOICES) stands in for the values it sets when it splits no experiment."""
    ident = identity(runs)
    base = [k for k in BASE if k in runs]
    choices = [f"choice.{c}" for c in LABEL_CHOICES if f"choice.{c}" in runs]
    kept = list(base)
    for column in choices + ident:
        if column in choices and not _determined(runs, column, base + ident):
            continue
        if not _determined(runs, column, kept):
            kept.append(column)
    return kept[len(base) :]


def _name(column: str) -> str:
    return column.split(".", 1)[1] if column.startswith(("config.", "choice.")) else column


def _label(runs: pd.DataFrame, within: list[str], columns: list[str], strip: str = "") -> pd.Series:
    """`key=value, ...` of the columns that vary within each `within` group, per run."""
    if not columns:
        return pd.Series("", index=runs.index)
    varies = runs.groupby(within, dropna=False)[columns].transform("nunique") > 1
    parts = pd.DataFrame(
        {
            c: (_name(c).removeprefix(strip) + "=" + runs[c].astype(str)).where(varies[c])
            for c in columns
        }
    )
    return parts.apply(lambda r: ", ".join(r.dropna()), axis=1)


def _variant(pruner: pd.Series, sparsity: pd.Series) -> pd.Series:
    return (pruner + " " + sparsity.map("{:g}%".format)).where(pruner != "dense", "dense")


def label(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Adds the row labels: `method` (the unlearner and its settings that vary, `l1_sparse
    (schedule=constant)`), `variant` (`dense`, `omp 95%`, plus varying pruner settings) and
    `setting` (every other shown value, `forget.fraction=0.05`); returns the shown columns."""
    keys = shown(runs)
    unl = [c for c in keys if c.startswith("config.unlearner.")]
    prn = [c for c in keys if c.startswith("config.pruner.")]
    rest = [c for c in keys if c not in unl + prn]

    def join(name: pd.Series, parts: pd.Series) -> pd.Series:
        return name.where(parts == "", name + " (" + parts + ")")

    runs = runs.assign(
        method=join(runs["unlearner"].astype(str), _label(runs, ["unlearner"], unl, "unlearner.")),
        variant=join(
            _variant(runs["pruner"].astype(str), runs["target_sparsity"]),
            _label(runs, ["pruner"], prn, "pruner."),
        ),
        setting=_label(runs, ["dataset", "arch", "forget"], rest),
    )
    return runs, keys


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over training seeds of every numeric metric (a training seed's runs with
    several unlearning seeds first averaged; their spread is `_std_unlearn`), one row per
    experiment (every identity column, under its config name: `forget.fraction`), `seeds` =
    runs pooled, `train_seeds` = training seeds among them. A run that repeats
    an experiment and seed already seen (the same job run twice) is not a new sample: the last
    one by folder is kept and `repeats` counts the others."""
    runs, keys = label(runs)
    by = [
        "dataset",
        "arch",
        "forget",
        "setting",
        "method",
        "pruner",
        "target_sparsity",
        "variant",
        "unlearner",
        *keys,
    ]
    by += [c for c in ("reference_kind",) if c in runs]  # which Retrain reference (never pooled)
    seeds = ["seed", *([UNLEARN_SEED] if UNLEARN_SEED in runs else [])]
    repeat = runs.duplicated([*by, *seeds], keep="last")
    repeats = runs[repeat].groupby(by, dropna=False).size()
    runs = runs[~repeat]
    skip = {*by, *seeds, "class_idx"}
    numeric = [c for c in runs.select_dtypes("number").columns if c not in skip]
    per_seed = runs.groupby([*by, "seed"], dropna=False, sort=True)[numeric]
    grouped = per_seed.mean().groupby(by, dropna=False, sort=True)
    out = grouped[numeric].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    within = per_seed.std().groupby(by, dropna=False, sort=True).mean()
    if within.notna().any().any():  # several unlearning seeds per training seed
        out = out.join(within.add_suffix("_std_unlearn"))
    pooled = runs.groupby(by, dropna=False, sort=True)
    out["seeds"] = pooled.size()
    out["train_seeds"] = pooled["seed"].nunique()
    out["repeats"] = repeats.reindex(out.index, fill_value=0)
    if FLAG in runs:
        out[FLAG] = pooled[FLAG].sum().astype(int)
    return out.reset_index().rename(columns={c: _name(c) for c in keys})
