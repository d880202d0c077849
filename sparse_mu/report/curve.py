"""A metric curve against one swept setting (the learning rate), dense vs sparse, over seeds.

`python run.py -m +experiment=compare_tiny` sweeps FT's learning rate on the dense and the 95 %
OMP model at 10 % of Retrain's steps over 3 seeds; when it ends, `CompareReport` writes the usual
report and `curve.md`, `curve.csv` and `curve.png`/`.svg` (Disparity Avg and RA against the
learning rate, a line per pruning variant, mean +- std over seeds, Retrain's RA dashed), and
prints both to the console. `python -m sparse_mu.report.curve DIR [--key unlearner.lr]` does the
same for any folder of runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from sparse_mu.report import report  # noqa: E402
from sparse_mu.report.runs import collect  # noqa: E402

METRICS = (("disparity_avg", "Disparity Avg"), ("RA", "RA"), ("UA", "UA"))


def _variant(row: pd.Series) -> str:
    return "dense" if row["pruner"] == "dense" else f"{row['pruner']} {row['target_sparsity']:g}%"


def curve(runs: pd.DataFrame, key: str = "unlearner.lr") -> pd.DataFrame:
    """One row per (method, variant, value of `key`): mean and std over seeds of each metric,
    Retrain's RA, the number of seeds and of damaged runs."""
    column = f"config.{key}"
    if runs.empty or column not in runs:
        raise ValueError(f"no finished run records {key}")
    runs = runs.assign(variant=runs.apply(_variant, axis=1), value=pd.to_numeric(runs[column]))
    if "damaged" not in runs:
        runs["damaged"] = False
    agg = {f"{m}_{s}": (m, s) for m, _ in METRICS for s in ("mean", "std")}
    out = runs.groupby(["unlearner", "variant", "value"], sort=True).agg(
        **agg,
        retrain_RA=("retrain.RA", "mean"),
        cost_vs_retrain_steps=("cost_vs_retrain_steps", "max"),
        seeds=("seed", "nunique"),
        damaged=("damaged", "sum"),
    )
    return out.reset_index().rename(columns={"value": key})


def _cell(row: pd.Series, metric: str) -> str:
    std = row[f"{metric}_std"]
    return f"{row[f'{metric}_mean']:.1f} ± {0.0 if pd.isna(std) else std:.1f}"


def markdown(table: pd.DataFrame, key: str = "unlearner.lr") -> str:
    """The curve as one markdown table per method: a row per value of `key`, columns per variant."""
    lines = []
    for method, block in table.groupby("unlearner", sort=False):
        variants = list(dict.fromkeys(block["variant"]))
        head = [key] + [f"{v} {label}" for v in variants for _, label in METRICS] + ["damaged runs"]
        lines += [f"**{method}**, mean ± std over seeds (Retrain RA "
                  f"{block['retrain_RA'].mean():.1f}; cost vs Retrain (steps) "
                  f"{block['cost_vs_retrain_steps'].max():.3f})", "",
                  "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for value, rows in block.groupby(key, sort=True):
            by = {r["variant"]: r for _, r in rows.iterrows()}
            cells = [_cell(by[v], m) if v in by else "-" for v in variants for m, _ in METRICS]
            damaged = ", ".join(f"{v} {int(by[v]['damaged'])}/{int(by[v]['seeds'])}" for v in variants if v in by)
            lines.append(f"| {value:g} | " + " | ".join(cells) + f" | {damaged} |")
        lines.append("")
    return "\n".join(lines)


def figure(table: pd.DataFrame, key: str = "unlearner.lr") -> plt.Figure:
    """Disparity Avg and RA against `key` (log axis), a line per (method, variant)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (method, variant), block in table.groupby(["unlearner", "variant"], sort=False):
        block = block.sort_values(key)
        style = "-o" if variant == "dense" else "--s"
        for ax, (metric, label) in zip(axes, METRICS[:2], strict=False):
            ax.errorbar(block[key], block[f"{metric}_mean"], yerr=block[f"{metric}_std"].fillna(0),
                        fmt=style, capsize=3, label=f"{method}, {variant}")
            ax.set_title(label + " (%)")
    axes[1].axhline(table["retrain_RA"].mean(), color="black", ls=":", label="Retrain (reference)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def write(root: str | Path, key: str = "unlearner.lr", out_dir: str | Path | None = None) -> tuple[str, list[Path]]:
    """curve.md, curve.csv and the plot for the runs below `root`; returns the markdown."""
    root = Path(root)
    out = Path(out_dir) if out_dir else root
    out.mkdir(parents=True, exist_ok=True)
    table = curve(collect(root)[0], key)
    text = markdown(table, key)
    table.to_csv(out / "curve.csv", index=False, float_format="%.4f")
    (out / "curve.md").write_text(f"# {key} curve\n\n{text}")
    fig = figure(table, key)
    paths = [out / "curve.png", out / "curve.svg"]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return text, [out / "curve.md", out / "curve.csv", *paths]


class CompareReport(Callback):
    """Hydra callback of the compare presets: the sweep's report and its curve against `key`,
    written into the sweep directory and printed to the console."""

    def __init__(self, key: str = "unlearner.lr") -> None:
        self.key = key

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        done = report(root)
        if (root / "report.md").exists():
            print((root / "report.md").read_text())
        if done["runs"]:
            text, paths = write(root, self.key)
            print(f"## {self.key} curve\n\n{text}")
            print("wrote " + ", ".join(str(p) for p in paths))
        print(f"sweep: {done['runs']} runs finished, {done['failed']} failed; report in {root / 'report.md'}")
        if done["failed"]:
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sparse_mu.report.curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a sweep directory (or any folder with runs below it)")
    parser.add_argument("--key", default="unlearner.lr", help="the swept setting (default: unlearner.lr)")
    parser.add_argument("--out", help="where to write curve.md/csv/png (default: ROOT)")
    args = parser.parse_args(argv)
    text, paths = write(args.root, args.key, args.out)
    print(text)
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
