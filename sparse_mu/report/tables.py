"""report.md: the paper's table layout, one table per setting."""

from __future__ import annotations

import pandas as pd

from sparse_mu.report.columns import FLAG, GAP_METRICS, LABELS, TABLE_METRICS

# One table per setting; `setting` holds the other values that differ between runs.
BLOCK = ["dataset", "arch", "forget", "setting"]


def _cell(row: pd.Series, metric: str) -> str:
    if metric == FLAG:
        return f"{row[FLAG]}/{row['seeds']}"
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None or pd.isna(mean):
        return "-"
    text = f"{mean:.2f}" + (f" ± {std:.2f}" if pd.notna(std) and row["seeds"] > 1 else "")
    gap = row.get(f"gap.{metric}_mean")
    if metric in GAP_METRICS and gap is not None and pd.notna(gap):
        text += f" ({gap:+.2f})"
    return text


def variants(block: pd.DataFrame) -> list[str]:
    """The pruning variants of a block, dense first, then by pruner and sparsity."""
    first = block.sort_values(["pruner", "target_sparsity", "variant"]).drop_duplicates("variant")
    return sorted(first["variant"], key=lambda v: v != "dense")


def methods(block: pd.DataFrame) -> list[str]:
    """Retrain first, then by name."""
    return sorted(block["method"].unique(), key=lambda u: (not u.startswith("retrain"), u))


def title(key: tuple) -> str:
    dataset, arch, forget, setting = key
    return f"{dataset} / {arch}, forget: {forget}" + (f" ({setting})" if setting else "")


def _table(block: pd.DataFrame) -> list[str]:
    order = variants(block)
    metrics = [
        m for m in TABLE_METRICS if f"{m}_mean" in block and block[f"{m}_mean"].notna().any()
    ]
    metrics += [FLAG] if FLAG in block else []
    cells = block.set_index(["method", "variant"])
    header = ["method"] + [f"{LABELS.get(m, m)} {v}" for m in metrics for v in order]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods(block):
        row = [method] + [
            _cell(cells.loc[(method, v)], m) if (method, v) in cells.index else ""
            for m in metrics
            for v in order
        ]
        out.append("| " + " | ".join(row) + " |")
    shown = [
        k
        for k in ("original.RA", "original.TA", "original.SA", "original.ASR")
        if f"{k}_mean" in block and block[f"{k}_mean"].notna().any()
    ]
    if shown:
        originals = block.groupby("variant")[[f"{k}_mean" for k in shown]].first().reindex(order)
        notes = ", ".join(
            f"{v}: " + ", ".join(f"{k.split('.')[1]} {r[f'{k}_mean']:.2f}" for k in shown)
            for v, r in originals.iterrows()
        )
        out += ["", f"Original model before unlearning: {notes}."]
    if "flops_percent_mean" in block and block["flops_percent_mean"].notna().any():
        flops = block.groupby("variant")["flops_percent_mean"].first().reindex(order)
        out += ["", "FLOPs per image, % of the dense model (dead channels removed): "
                + ", ".join(f"{v} {p:.1f}" for v, p in flops.items() if pd.notna(p)) + "."]
    if repeats := int(block["repeats"].sum()):
        out += [
            "",
            f"{repeats} runs repeat an experiment and seed of this table (the same job "
            "run again); each counts once (the last by folder).",
        ]
    return out


def markdown(
    summary: pd.DataFrame | None, failed: list[dict], n_runs: int, unreadable: list[dict] = ()
) -> str:
    """A table per setting, methods as rows, each metric split into the pruning variants; cells
    are mean ± std over seeds (gap to Retrain). Failed and unreadable runs are listed."""
    out = [
        "# Results",
        "",
        f"{n_runs} runs. Cells: mean ± std over seeds (gap to Retrain); "
        "Disparity Avg = mean |gap| over UA, MIA-Efficacy, RA, TA (lower is closer to Retrain). "
        "Runs are pooled only when nothing but the seed differs.",
        "",
    ]
    if summary is not None:
        for key, block in summary.groupby(BLOCK, sort=True):
            out += [f"## {title(key)}", "", *_table(block), ""]
    if failed:
        out += [
            f"## Failed runs ({len(failed)})",
            "",
            "| run | overrides | error |",
            "|---|---|---|",
        ]
        out += [
            f"| {f['run_dir']} | {' '.join(f['overrides'].replace('- ', '').split())} "
            f"| {f['error']} |"
            for f in failed
        ]
        out.append("")
    if unreadable:
        out += [
            f"## Unreadable runs ({len(unreadable)}), not in the tables",
            "",
            "| run | problem |",
            "|---|---|",
        ]
        out += [f"| {u['run_dir']} | {u['error']} |" for u in unreadable]
        out.append("")
    return "\n".join(out)
