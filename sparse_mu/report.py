"""Results as tables and plots.

- `print_run(metrics)`: one run's table on the console (printed at the end of every run).
- `python -m sparse_mu.report <dir>`: every `metrics.json` below `<dir>` (a sweep, or a folder of
  runs) -> `report.md` and `report.csv` (the paper's layout: methods x dense/sparse x UA,
  MIA-Efficacy, RA, TA, RTE, with gaps to Retrain and the Disparity Average, mean +- std over
  seeds) and `*.png` plots of each metric against sparsity, written into `<dir>`. Failed runs
  (a `FAILED` file, no metrics) are listed, not dropped.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from sparse_mu.cache import write_json
from sparse_mu.cost import table_notes
from sparse_mu.metrics import BACKDOOR_KEYS, NESTED

ROWS = (("UA", "UA"), ("MIA_efficacy", "MIA-Efficacy"), ("RA", "RA"), ("TA", "TA"), ("RTE_s", "RTE (s)"))
BACKDOOR_ROWS = (("SA", "SA"), ("ASR", "ASR"), ("ASR_legacy", "ASR (legacy)"))
TABLE_METRICS = ("UA", "MIA_efficacy", "RA", "TA", "RTE_s")
# Shown in tables and plots when the runs have them (the backdoor metrics only in backdoor runs).
OPTIONAL_METRICS = (*BACKDOOR_KEYS, "MIA_privacy", "disparity_avg", "cost_vs_retrain_steps", "damaged")
GROUP_KEYS = ("dataset", "arch", "forget", "method", "pruner", "target_sparsity")
LABELS = dict(ROWS) | dict(BACKDOOR_ROWS) | {"MIA_privacy": "MIA-Privacy", "disparity_avg": "Disparity Avg",
                                            "cost_vs_retrain_steps": "cost/Retrain (steps)", "damaged": "damaged (share)"}


# -- one run ------------------------------------------------------------------------------

def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def run_table(m: dict) -> Table:
    """Original model, unlearned model, Retrain and the gap, one row per metric."""
    title = (f"{m['unlearner']} on {m['dataset']}/{m['arch']}, pruner {m['pruner']} "
             f"(sparsity {m['sparsity']:.1f} %), forget {m['forget']} ({m['forget_size']} samples), seed {m['seed']}")
    t = Table(title=title, title_justify="left")
    for col in ("metric (%)", "original", "unlearned", "Retrain", "gap"):
        t.add_column(col, justify="left" if col == "metric (%)" else "right")
    ref, gap, orig = m.get("retrain") or {}, m.get("gap") or {}, m.get("original") or {}
    rows = ROWS + (BACKDOOR_ROWS if "ASR" in m else ())
    for key, label in rows:
        g = gap.get(key)
        t.add_row(label, _fmt(orig.get(key)), _fmt(m.get(key)), _fmt(ref.get(key)), "-" if g is None else f"{g:+.2f}")
    notes = []
    if m.get("disparity_avg") is not None:
        notes.append(f"Disparity Average (mean |gap| over UA, MIA-Efficacy, RA, TA): {m['disparity_avg']:.2f}"
                     f"   device: {m['device']}")
    notes += table_notes(m)
    if m.get("transfer_acc"):
        acc, secs = m["transfer_acc"], m["transfer_time_s"]
        notes.append("transfer (linear probe) accuracy / time: " + ", ".join(
            f"{k} {_fmt(acc[k])} % / {_fmt(secs[k])} s" for k in acc))
    if "mask_IoU" in m:
        notes.append(f"un-pruning vs retrain-then-prune: mask IoU {m['mask_IoU']:.2f} (prune-then-unlearn "
                     f"{m['mask_IoU_original']:.2f}), IoM {m['mask_IoM']:.2f} ({m['mask_IoM_original']:.2f}), "
                     f"KL_test {m['KL_test']:.4f} ({m['KL_test_original']:.4f}), "
                     f"KL_forget {m['KL_forget']:.4f} ({m['KL_forget_original']:.4f})")
    t.caption = "\n".join(notes) or None
    return t


def print_run(m: dict, console: Console | None = None) -> None:
    (console or Console()).print(run_table(m))


# -- many runs ----------------------------------------------------------------------------

def collect(root: Path) -> tuple[pd.DataFrame, list[dict]]:
    """One row per finished run (flattened metrics.json) and the failed runs below `root`."""
    rows, failed = [], []
    for path in sorted(root.rglob("metrics.json")):
        m = json.loads(path.read_text())
        row = {k: float(v) if isinstance(v, bool) else v for k, v in m.items() if not isinstance(v, dict)}
        for nested in NESTED:
            row.update({f"{nested}.{k}": v for k, v in (m.get(nested) or {}).items()})
        row.update({f"hparams.{k}": json.dumps(v) for k, v in (m.get("hparams") or {}).items() if k != "seed"})
        row["run_dir"] = str(path.parent.relative_to(root))
        rows.append(row)
    for path in sorted(root.rglob("FAILED")):
        if not (path.parent / "metrics.json").exists():
            lines = [ln for ln in path.read_text().strip().splitlines() if ln.strip()]
            overrides = path.parent / ".hydra" / "overrides.yaml"
            failed.append({"run_dir": str(path.parent.relative_to(root)), "error": lines[-1] if lines else "",
                           "overrides": overrides.read_text().strip() if overrides.exists() else ""})
    return _with_method(pd.DataFrame(rows)), failed


def _with_method(runs: pd.DataFrame) -> pd.DataFrame:
    """`method`: the unlearner, plus the hyperparameters that vary between its runs (so a sweep
    over L1 schedules gives one row per schedule)."""
    if runs.empty:
        return runs
    hp = [c for c in runs if c.startswith("hparams.")]
    labels = runs["unlearner"].astype(str).copy()
    for name, group in runs.groupby("unlearner"):
        varying = [c for c in hp if group[c].nunique(dropna=True) > 1]
        for i, row in group.iterrows():
            parts = [f"{c.removeprefix('hparams.')}={json.loads(row[c])}" for c in varying if pd.notna(row[c])]
            labels[i] = f"{name} ({', '.join(parts)})" if parts else name
    return runs.assign(method=labels).drop(columns=hp)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every numeric metric, per (setting, method, pruner, sparsity)."""
    keys = [k for k in GROUP_KEYS if k in runs]
    numeric = [c for c in runs.select_dtypes("number").columns if c not in (*keys, "seed", "class_idx")]
    grouped = runs.groupby(keys, dropna=False)
    out = grouped[numeric].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["seeds"] = grouped.size()
    return out.reset_index()


def _cell(row: pd.Series, metric: str, with_gap: bool) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None or pd.isna(mean):
        return "-"
    text = f"{mean:.2f}" + (f" ± {std:.2f}" if pd.notna(std) and row["seeds"] > 1 else "")
    gap = row.get(f"gap.{metric}_mean")
    if with_gap and gap is not None and pd.notna(gap):
        text += f" ({gap:+.2f})"
    return text


def _variant(row: pd.Series) -> str:
    return "dense" if row["pruner"] == "dense" else f"{row['pruner']} {row['target_sparsity']:.0f}%"


def markdown(summary: pd.DataFrame | None, failed: list[dict], n_runs: int) -> str:
    """The paper's layout: a table per (data set, model, forgetting), methods as rows, each
    metric split into the pruning variants; cells are mean ± std over seeds (gap to Retrain)."""
    out = ["# Results", "", f"{n_runs} runs. Cells: mean ± std over seeds (gap to Retrain); "
           "Disparity Avg = mean |gap| over UA, MIA-Efficacy, RA, TA (lower is closer to Retrain).", ""]
    blocks = []
    if summary is not None:
        summary = summary.assign(variant=[_variant(r) for _, r in summary.iterrows()])
        order = sorted(summary["variant"].unique(), key=lambda v: (v != "dense", v))
        blocks = summary.groupby(["dataset", "arch", "forget"], sort=True)
    for (dataset, arch, forget), block in blocks:
        out += [f"## {dataset} / {arch}, forget: {forget}", ""]
        metrics = [m for m in (*TABLE_METRICS, *OPTIONAL_METRICS) if f"{m}_mean" in block and block[f"{m}_mean"].notna().any()]
        header = ["method"] + [f"{LABELS.get(m, m)} {v}" for m in metrics for v in order]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        methods = sorted(block["method"].unique(), key=lambda u: (not u.startswith("retrain"), u))
        for method in methods:
            cells = [method]
            for m in metrics:
                for v in order:
                    hit = block[(block["method"] == method) & (block["variant"] == v)]
                    cells.append(_cell(hit.iloc[0], m, m in ("UA", "MIA_efficacy", "RA", "TA")) if len(hit) else "")
            out.append("| " + " | ".join(cells) + " |")
        shown = [(k, k.split(".")[1]) for k in ("original.RA", "original.TA", "original.SA", "original.ASR")
                 if f"{k}_mean" in block and block[f"{k}_mean"].notna().any()]
        if shown:
            originals = block.groupby("variant")[[f"{k}_mean" for k, _ in shown]].first()
            notes = ", ".join(f"{v}: " + ", ".join(f"{name} {r[f'{k}_mean']:.2f}" for k, name in shown)
                              for v, r in originals.iterrows())
            out += ["", f"Original model before unlearning: {notes}."]
        out.append("")
    if failed:
        out += [f"## Failed runs ({len(failed)})", "", "| run | overrides | error |", "|---|---|---|"]
        out += [f"| {f['run_dir']} | {' '.join(f['overrides'].replace('- ', '').split())} | {f['error']} |" for f in failed]
        out.append("")
    return "\n".join(out)


def plot(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Each metric against sparsity, a line per method (and pruner), one figure per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    metrics = [m for m in ("UA", "MIA_efficacy", "RA", "TA", *OPTIONAL_METRICS)
               if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()]
    for (dataset, arch, forget), block in summary.groupby(["dataset", "arch", "forget"], sort=True):
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
        several_pruners = block.loc[block["pruner"] != "dense", "pruner"].nunique() > 1
        for (method, pruner), line in block.groupby(["method", "pruner"] if several_pruners else ["method", "method"]):
            line = line.sort_values("target_sparsity")
            label = f"{method} ({pruner})" if several_pruners else method
            for ax, m in zip(axes[0], metrics, strict=True):
                ax.errorbar(line["target_sparsity"], line[f"{m}_mean"], yerr=line[f"{m}_std"].fillna(0),
                            marker="o", capsize=3, label=label)
        for ax, m in zip(axes[0], metrics, strict=True):
            if m in BACKDOOR_KEYS and f"original.{m}_mean" in block:
                # the Trojan model before unlearning (Fig. 6 of the paper), one line per pruner
                for pruner, part in block.groupby("pruner") if several_pruners else [("", block)]:
                    before = part.groupby("target_sparsity")[f"original.{m}_mean"].first()
                    ax.plot(before.index, before.values, "k--", marker="x",
                            label=f"original ({pruner})" if several_pruners else "original")
                ax.legend(fontsize=8)
            ax.set_xlabel("sparsity (%)")
            ax.set_title(LABELS.get(m, m) + (" (%)" if m != "disparity_avg" else ""))
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{dataset} / {arch}, forget: {forget}")
        fig.tight_layout()
        path = out_dir / f"metrics_vs_sparsity_{dataset}_{arch}_{forget}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def report(root: str | Path, out_dir: str | Path | None = None) -> dict:
    """Write report.md, report.csv and plots for every run below `root`; returns what was written."""
    root = Path(root)
    out_dir = Path(out_dir) if out_dir else root
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, failed = collect(root)
    written = {"runs": len(runs), "failed": len(failed), "files": []}
    if len(runs):
        summary = summarise(runs)
        summary.to_csv(out_dir / "report.csv", index=False, float_format="%.4f")
        (out_dir / "report.md").write_text(markdown(summary, failed, len(runs)))
        written["files"] = [out_dir / "report.md", out_dir / "report.csv", *plot(summary, out_dir)]
    elif failed:
        (out_dir / "report.md").write_text(markdown(None, failed, 0))
        written["files"] = [out_dir / "report.md"]
    write_json(out_dir / "report.json", {"runs": len(runs), "failed": failed})
    return written


class SweepReport(Callback):
    """Hydra callback: when a sweep ends, write its report into the sweep directory, and exit
    with status 1 if any job failed (after every other job has run)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        done = report(root)
        console = Console()
        console.print(f"sweep: {done['runs']} runs finished, {done['failed']} failed; report in {root / 'report.md'}")
        if done["failed"]:
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sparse_mu.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a sweep directory (or any folder with runs below it)")
    parser.add_argument("--out", help="where to write the report (default: ROOT)")
    args = parser.parse_args(argv)
    done = report(args.root, args.out)
    console = Console()
    console.print(f"{done['runs']} runs finished, {done['failed']} failed")
    for path in done["files"]:
        console.print(f"  wrote {path}")
    if done["failed"]:
        console.print(f"[red]failed runs are listed in {Path(args.out or args.root) / 'report.md'}[/red]")


if __name__ == "__main__":
    main()
