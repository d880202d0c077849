"""Sequential deletion requests in a report (forget=sequential, `sequential.rounds` in
metrics.json): a table per setting (round x method x pruning variant, mean ± std over seeds, the
gap to that round's Retrain) appended to report.md, `rounds.csv`, and a figure per setting,
`rounds_<dataset>_<arch>_<forget>[_<setting>].png` / `.svg`: each metric over the rounds, a line
per method and variant, that round's Retrain dashed. Rows pool as the main report's do (`runs.label`).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd

from sparse_mu.report.columns import GAP_METRICS, LABELS
from sparse_mu.report.runs import label
from sparse_mu.report.tables import BLOCK, methods, title

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = (*GAP_METRICS, "disparity_avg")
ROW = [*BLOCK, "method", "variant", "round"]


def round_rows(runs: pd.DataFrame, root: Path) -> pd.DataFrame:
    """One row per round of every run that has rounds, labelled as the main report labels runs."""
    labelled, _ = label(runs)
    rows = []
    for _, run in labelled.iterrows():
        try:
            m = json.loads((root / run["run_dir"] / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        for rec in (m.get("sequential") or {}).get("rounds") or []:
            ref = rec.get("retrain") or {}
            rows.append({**{k: run[k] for k in (*BLOCK, "method", "variant", "seed")}, "round": rec["round"],
                         "forget_size": rec["forget_size"], "RTE_s": rec.get("RTE_s"),
                         **{k: rec.get(k) for k in METRICS}, **{f"retrain.{k}": ref.get(k) for k in GAP_METRICS}})
    return pd.DataFrame(rows)


def summarise_rounds(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (setting, method, variant, round); a repeated run counts once."""
    rows = rows.drop_duplicates([*ROW, "seed"], keep="last")
    numeric = [c for c in rows.select_dtypes("number").columns if c not in ("round", "seed")]
    grouped = rows.groupby(ROW, dropna=False, sort=True)
    out = grouped[numeric].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["seeds"] = grouped.size()
    return out.reset_index()


def _cell(row: pd.Series, metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if pd.isna(mean):
        return ""
    text = f"{mean:.2f}" + (f" ± {std:.2f}" if pd.notna(std) else "")
    ref = row.get(f"retrain.{metric}_mean")
    return text + (f" ({mean - ref:+.2f})" if ref is not None and pd.notna(ref) else "")


def markdown_rounds(summary: pd.DataFrame) -> str:
    out = ["# Sequential deletion requests", "",
           "Round r unlearns part r of D_f from round r-1's model; D_f size is the cumulative forget set it is "
           "measured on. Cells: mean ± std over seeds (gap to that round's Retrain).", ""]
    header = ["method", "variant", "round", "D_f size", *(LABELS.get(m, m) for m in METRICS), "RTE (s)"]
    for key, block in summary.groupby(BLOCK, sort=True):
        out += [f"## {title(key)}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in methods(block):
            for _, row in block[block["method"] == method].sort_values(["variant", "round"]).iterrows():
                cells = [method, row["variant"], str(row["round"]), f"{row['forget_size_mean']:.0f}",
                         *(_cell(row, m) for m in METRICS), f"{row['RTE_s_mean']:.2f}"]
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def figure_rounds(block: pd.DataFrame) -> plt.Figure:
    """One setting: a panel per metric over the rounds."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.4 * len(METRICS), 3.6), squeeze=False, layout="constrained")
    lines = list(block.groupby(["method", "variant"], sort=True))
    for ax, metric in zip(axes[0], METRICS, strict=True):
        for j, ((method, variant), line) in enumerate(lines):
            line = line.sort_values("round")
            ax.errorbar(line["round"], line[f"{metric}_mean"], yerr=line[f"{metric}_std"].fillna(0), capsize=2,
                        marker="os^Dv"[j % 5], color=f"C{j % 10}", label=f"{method} ({variant})")
        ref = f"retrain.{metric}_mean"
        if ref in block and block[ref].notna().any():
            for variant, part in block.groupby("variant", sort=True):
                per_round = part.groupby("round")[ref].first()
                ax.plot(per_round.index, per_round.values, color="black", linestyle="--", linewidth=1.4,
                        label=f"Retrain ({variant})")
        ax.set_title(LABELS.get(metric, metric) + " (%)")
        ax.set_xlabel("round")
        ax.set_xticks(sorted(block["round"].unique()))
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 4),
               fontsize=8, frameon=False)
    return fig


def report_rounds(runs: pd.DataFrame, root: Path, out_dir: Path) -> tuple[str, list[Path]]:
    """The rounds' markdown ('' when no run has rounds) and the files written."""
    rows = round_rows(runs, root)
    if rows.empty:
        return "", []
    summary = summarise_rounds(rows)
    summary.to_csv(out_dir / "rounds.csv", index=False, float_format="%.4f")
    written = [out_dir / "rounds.csv"]
    for key, block in summary.groupby(BLOCK, sort=True):
        fig = figure_rounds(block)
        fig.suptitle(f"sequential deletion: {title(key)}")
        stem = "_".join(str(k) for k in key[:3]) + (f"_{key[3]}" if key[3] else "")
        stem = "".join(c if c.isalnum() or c in ".=-" else "_" for c in stem)[:80]
        for suffix in (".png", ".svg"):
            fig.savefig(out_dir / f"rounds_{stem}{suffix}", dpi=120)
            written.append(out_dir / f"rounds_{stem}{suffix}")
        plt.close(fig)
    return markdown_rounds(summary), written
