"""report.md: the paper's table layout, one table per setting."""

from __future__ import annotations

import pandas as pd

from sparse_mu.report.columns import (
    FLAG,
    GAP_METRICS,
    LABELS,
    PER_EXAMPLE_LABELS,
    PER_EXAMPLE_METRICS,
    TABLE_METRICS,
)

# One table per setting; `setting` holds the other values that differ between runs.
BLOCK = ["dataset", "arch", "forget", "setting"]


def _cell(row: pd.Series, metric: str) -> str:
    if metric == FLAG:
        return f"{row[FLAG]}/{row['seeds']}"
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None or pd.isna(mean):
        return "-"
    text = f"{mean:.2f}" + (f" ± {std:.2f}" if pd.notna(std) and row.get("train_seeds", row["seeds"]) > 1 else "")
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
    out += _per_example_table(block, order)
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


def _pe_cell(row: pd.Series, column: str, spread: bool) -> str:
    mean, std = row.get(f"{column}_mean"), row.get(f"{column}_std")
    if mean is None or pd.isna(mean):
        return "-"
    return f"{mean:.3g}" + (f" ± {std:.2g}" if spread and pd.notna(std) else "")


def _per_example_table(block: pd.DataFrame, order: list[str]) -> list[str]:
    """The per-example tests of the block's runs (when they have them): each method's unlearned
    models and the original, against the reference store named in the heading."""
    if "per_example.forget_ulira_auc_mean" not in block or block["per_example.forget_ulira_auc_mean"].isna().all():
        return []
    rows = block[block["per_example.forget_ulira_auc_mean"].notna()]
    metrics = [m for m in PER_EXAMPLE_METRICS if f"per_example.{m}_mean" in rows]
    kinds = ", ".join(sorted(rows["reference_kind"].dropna().astype(str).unique())) if "reference_kind" in rows else "?"
    n, m = rows["per_example.references_mean"].max(), rows["per_example.unlearn_seeds_mean"].max()
    header = ["method"] + [f"{PER_EXAMPLE_LABELS.get(k, k)} {v}" for k in metrics for v in order]
    out = ["", f"Per-example tests against the reference store (reference: {kinds}; {n:g} references, "
           f"{m:g} unlearned models per method; docs/evaluation.md). Cells: mean ± std over training seeds.",
           "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cells = rows.set_index(["method", "variant"])
    for method in methods(rows):
        line = [method] + [_pe_cell(cells.loc[(method, v)], f"per_example.{k}", cells.loc[(method, v)]["train_seeds"] > 1)
                           if (method, v) in cells.index else "" for k in metrics for v in order]
        out.append("| " + " | ".join(line) + " |")
    first = rows.sort_values("method").groupby("variant").first()
    line = ["original (nothing unlearned)"] + [_pe_cell(first.loc[v], f"per_example_original.{k}", False)
                                               if v in first.index else "" for k in metrics for v in order]
    out.append("| " + " | ".join(line) + " |")
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
