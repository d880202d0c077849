"""per_example_<setting>.png: one panel per per-example metric (docs/evaluation.md), bars for
each method's unlearned models and the original, one colour per pruning variant."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from sparse_mu.report.columns import PER_EXAMPLE_LABELS, PER_EXAMPLE_METRICS
from sparse_mu.report.tables import BLOCK, methods, title, variants

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORIGINAL = "original"


def _values(block: pd.DataFrame, metric: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Rows (methods, then the original) x variants: means and stds over training seeds."""
    order, rows = variants(block), methods(block)
    mean = np.full((len(rows) + 1, len(order)), np.nan)
    std = np.zeros_like(mean)
    cells = block.set_index(["method", "variant"])
    for j, v in enumerate(order):
        for i, method in enumerate(rows):
            if (method, v) in cells.index:
                row = cells.loc[(method, v)]
                mean[i, j] = row[f"per_example.{metric}_mean"]
                std[i, j] = np.nan_to_num(row.get(f"per_example.{metric}_std", 0.0))
        first = block[block["variant"] == v].sort_values("method")
        if len(first):
            mean[-1, j] = first[f"per_example_original.{metric}_mean"].iloc[0]
    return [*rows, ORIGINAL], order, mean, std


def figure(block: pd.DataFrame) -> plt.Figure:
    metrics = [m for m in PER_EXAMPLE_METRICS if f"per_example.{m}_mean" in block]
    cols = 4
    fig, axes = plt.subplots((len(metrics) + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.2 * ((len(metrics) + cols - 1) // cols)),
                             squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        rows, order, mean, std = _values(block, metric)
        width = 0.8 / len(order)
        x = np.arange(len(rows))
        for j, v in enumerate(order):
            ax.bar(x + (j - (len(order) - 1) / 2) * width, mean[:, j], width, yerr=std[:, j], label=v, capsize=2)
        if metric.endswith("ulira_auc"):
            ax.axhline(50, color="grey", lw=0.8, ls="--")  # chance: indistinguishable
        ax.set_xticks(x, rows, rotation=30, ha="right", fontsize=8)
        ax.set_title(PER_EXAMPLE_LABELS.get(metric, metric), fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_per_example(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write `per_example_<dataset>_<arch>_<forget>.png` for every setting with per-example tests."""
    written = []
    if "per_example.forget_ulira_auc_mean" not in summary:
        return written
    for key, block in summary.groupby(BLOCK, sort=True):
        block = block[block["per_example.forget_ulira_auc_mean"].notna()]
        if block.empty:
            continue
        fig = figure(block)
        fig.suptitle(title(key) + " — per-example tests", y=1.02)
        path = out_dir / f"per_example_{'_'.join(str(k) for k in key[:3])}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
