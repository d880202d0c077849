"""Plots of a report: one figure (PNG and SVG) per setting, one panel per metric.

- Three or more sparsities in a setting (Fig. 3, Fig. 4): each metric against sparsity, a line
  per method (and pruner); series that coincide stay visible by their markers, line styles and a
  small horizontal offset each.
- Otherwise (dense vs one sparsity, pruner kinds, L1 schedules: Table 3, Table 2) the comparison
  is categorical: grouped bars, a group per pruning variant, a bar per method, a dot on each bar
  (a 0 % bar is still seen).
- Retrain is the reference, not a method: a dashed black line (band = std over seeds) at the
  Retrain value of each variant. Error bars (std over seeds) are clipped to 0-100.
- One legend per figure, below the panels.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from sparse_mu.metrics import BACKDOOR_KEYS
from sparse_mu.report.columns import LABELS, PLOT_METRICS
from sparse_mu.report.tables import BLOCK, methods, title, variants

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text (searchable, editable)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
STYLES = ("-", "-.", ":", (0, (5, 1)))
REFERENCE = {"color": "black", "linestyle": "--", "linewidth": 1.4, "zorder": 3}
BEFORE = {"color": "tab:gray", "linestyle": ":", "linewidth": 1.4}
# Three or more sparsities in a setting: lines against sparsity; fewer: bars.
LINE_MIN_SPARSITIES = 3


def _yerr(mean: pd.Series, std: pd.Series) -> np.ndarray:
    """std below and above the mean, clipped to the 0-100 range of a percentage."""
    mean, std = mean.to_numpy(float), std.fillna(0).to_numpy(float)
    return np.vstack(
        [np.clip(np.minimum(std, mean), 0, None), np.clip(np.minimum(std, 100 - mean), 0, None)]
    )


def _reference(block: pd.DataFrame, metric: str, by: str) -> pd.DataFrame | None:
    """Retrain's mean and std per `by`: the reference recorded with every run, else the Retrain
    method's own runs; None when the runs have neither."""
    cols = [f"retrain.{metric}_mean", f"retrain.{metric}_std"]
    if cols[0] in block and block[cols[0]].notna().any():
        ref = block.groupby(by)[cols].first()
    elif (block["method"] == "retrain").any():
        ref = (
            block[block["method"] == "retrain"]
            .groupby(by)[[f"{metric}_mean", f"{metric}_std"]]
            .first()
        )
    else:
        return None
    ref.columns = ["mean", "std"]
    return ref


def _before(block: pd.DataFrame, metric: str, by: str) -> pd.Series | None:
    """The backdoored model before unlearning (Fig. 6 of the paper)."""
    col = f"original.{metric}_mean"
    if metric not in BACKDOOR_KEYS or col not in block:
        return None
    return block.groupby(by)[col].first()


def _bars(ax, block: pd.DataFrame, metric: str, series: list[str], colors: dict) -> None:
    order = variants(block)
    x = np.arange(len(order))
    width = 0.8 / max(len(series), 1)
    for j, method in enumerate(series):
        rows = block[block["method"] == method].set_index("variant").reindex(order)
        mean, std = rows[f"{metric}_mean"], rows[f"{metric}_std"]
        pos = x + (j - (len(series) - 1) / 2) * width
        ax.bar(pos, mean.fillna(0), width * 0.9, color=colors[method], label=method)
        ax.errorbar(
            pos,
            mean,
            yerr=_yerr(mean, std),
            fmt=".",
            color="black",
            markersize=5,
            elinewidth=0.8,
            capsize=2,
        )
    ref = _reference(block, metric, "variant")
    if ref is not None:
        ref = ref.reindex(order)
        ax.hlines(ref["mean"], x - 0.45, x + 0.45, label="Retrain (reference)", **REFERENCE)
        for xi, (mean, std) in zip(x, ref[["mean", "std"]].fillna(0).to_numpy(), strict=True):
            ax.fill_between(
                [xi - 0.45, xi + 0.45],
                max(mean - std, 0),
                min(mean + std, 100),
                color="black",
                alpha=0.12,
                linewidth=0,
            )
    before = _before(block, metric, "variant")
    if before is not None:
        ax.hlines(before.reindex(order), x - 0.45, x + 0.45, label="before unlearning", **BEFORE)
    ax.set_xticks(x, order)


def _lines(ax, block: pd.DataFrame, metric: str, series: list[str], colors: dict) -> None:
    pruners = block.loc[block["pruner"] != "dense", "pruner"].unique()
    by = ["method", "pruner"] if len(pruners) > 1 else ["method"]
    lines = [
        (key, line) for key, line in block[block["method"].isin(series)].groupby(by, sort=False)
    ]
    lines.sort(key=lambda kv: series.index(kv[0][0]))
    span = np.ptp(block["target_sparsity"]) or 1.0
    for j, (key, line) in enumerate(lines):
        line = line.sort_values("target_sparsity")
        offset = (j - (len(lines) - 1) / 2) * 0.02 * span
        mean, std = line[f"{metric}_mean"], line[f"{metric}_std"]
        ax.errorbar(
            line["target_sparsity"] + offset,
            mean,
            yerr=_yerr(mean, std),
            capsize=2,
            marker=MARKERS[j % len(MARKERS)],
            linestyle=STYLES[j % len(STYLES)],
            markersize=5,
            color=colors[key[0]] if len(by) == 1 else f"C{j % 10}",
            label=key[0] if len(by) == 1 else f"{key[0]} ({key[1]})",
        )
    parts = list(block.groupby("pruner")) if len(by) > 1 else [("", block)]
    refs = [(pruner, _reference(part, metric, "target_sparsity")) for pruner, part in parts]
    if len(refs) > 1 and all(r is not None and r.equals(refs[0][1]) for _, r in refs):
        refs = [("", refs[0][1])]  # one reference for all pruners
    for k, (pruner, ref) in enumerate(refs):
        if ref is None:
            continue
        name = f"Retrain (reference, {pruner})" if pruner else "Retrain (reference)"
        ax.plot(
            ref.index,
            ref["mean"],
            marker="x+1234"[k % 6] if pruner else None,
            label=name,
            **REFERENCE,
        )
        std = ref["std"].fillna(0)
        ax.fill_between(
            ref.index,
            (ref["mean"] - std).clip(0, 100),
            (ref["mean"] + std).clip(0, 100),
            color="black",
            alpha=0.1,
            linewidth=0,
        )
    for pruner, part in parts:
        before = _before(part, metric, "target_sparsity")
        if before is not None:
            ax.plot(
                before.index,
                before.values,
                marker="x",
                label=f"before unlearning ({pruner})" if pruner else "before unlearning",
                **BEFORE,
            )
    ax.set_xlabel("sparsity (%)")


def figure(block: pd.DataFrame) -> plt.Figure:
    """One setting's figure: a panel per metric the runs have."""
    metrics = [m for m in PLOT_METRICS if f"{m}_mean" in block and block[f"{m}_mean"].notna().any()]
    has_reference = _reference(block, metrics[0], "variant") is not None if metrics else False
    series = [m for m in methods(block) if not (has_reference and m == "retrain")]
    colors = {m: f"C{j % 10}" for j, m in enumerate(series)}
    as_lines = block["target_sparsity"].nunique() >= LINE_MIN_SPARSITIES
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.4 * len(metrics), 3.6), squeeze=False, layout="constrained"
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        (_lines if as_lines else _bars)(ax, block, metric, series, colors)
        ax.set_title(LABELS.get(metric, metric) + " (%)")
        # bars start at 0 (their length is the value); lines zoom in, within the 0-100 range
        low, high = ax.get_ylim() if as_lines else (-3, 103)
        ax.set_ylim(max(low, -3), min(high, 103 if not as_lines else 101.5))
        ax.grid(alpha=0.3, axis="y" if not as_lines else "both")
    handles = {}
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, handle)
    names = sorted(handles, key=lambda name: not name.startswith(tuple(series)))  # methods first
    fig.legend(
        [handles[n] for n in names],
        names,
        loc="outside lower center",
        ncols=len(names) if len(names) <= 6 else -(-len(names) // 2),
        fontsize=8,
        frameon=False,
    )
    return fig


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")
    return slug if len(slug) <= 60 else f"{slug[:50]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def plot(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write `metrics_<dataset>_<arch>_<forget>[_<setting>].png` and `.svg` for every setting."""
    written = []
    for key, block in summary.groupby(BLOCK, sort=True):
        fig = figure(block)
        fig.suptitle(title(key))
        stem = "_".join(str(k) for k in key[:3]) + (f"_{_slug(key[3])}" if key[3] else "")
        for suffix in (".png", ".svg"):
            path = out_dir / f"metrics_{stem}{suffix}"
            fig.savefig(path, dpi=120)
            written.append(path)
        plt.close(fig)
    return written
