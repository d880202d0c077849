"""Results as tables and plots.

- `print_run(metrics)`: one run's table on the console (printed at the end of every run).
- `python -m sparse_mu.report <dir>`: every `metrics.json` below `<dir>` (a sweep, or a folder of
  runs) -> `report.md` and `report.csv` (the paper's layout: methods x dense/sparse x UA,
  MIA-Efficacy, RA, TA, RTE, with gaps to Retrain and the Disparity Average, mean +- std over
  seeds) and plots (PNG and SVG), written into `<dir>`. Runs pool only when nothing but the seed
  differs (`runs.py`). Runs of forget=sequential add a per-round table, `rounds.csv` and plots
  (`rounds.py`). Failed runs (a `FAILED` file, no metrics) and unreadable ones (a truncated
  metrics.json or config.yaml) are listed, not dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console

from sparse_mu.cache import write_json
from sparse_mu.report.console import print_run, run_table
from sparse_mu.report.per_example_plot import plot_per_example
from sparse_mu.report.plots import figure, plot
from sparse_mu.report.rounds import report_rounds
from sparse_mu.report.runs import collect, summarise
from sparse_mu.report.tables import markdown

__all__ = [
    "SweepReport",
    "collect",
    "figure",
    "main",
    "markdown",
    "plot",
    "print_run",
    "report",
    "run_table",
    "summarise",
]


def report(root: str | Path, out_dir: str | Path | None = None) -> dict:
    """Write report.md, report.csv and plots for every run below `root`; returns what was
    written."""
    root = Path(root)
    out_dir = Path(out_dir) if out_dir else root
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, failed, unreadable = collect(root)
    written = {"runs": len(runs), "failed": len(failed), "unreadable": len(unreadable), "files": []}
    if len(runs):
        summary = summarise(runs)
        summary.to_csv(out_dir / "report.csv", index=False, float_format="%.4f")
        rounds, rounds_files = report_rounds(runs, root, out_dir)  # forget=sequential's rounds, if any
        text = markdown(summary, failed, len(runs), unreadable)
        (out_dir / "report.md").write_text(text + ("\n" + rounds + "\n" if rounds else ""))
        written["files"] = [out_dir / "report.md", out_dir / "report.csv", *plot(summary, out_dir),
                            *plot_per_example(summary, out_dir), *rounds_files]
    elif failed or unreadable:
        (out_dir / "report.md").write_text(markdown(None, failed, 0, unreadable))
        written["files"] = [out_dir / "report.md"]
    write_json(
        out_dir / "report.json", {"runs": len(runs), "failed": failed, "unreadable": unreadable}
    )
    return written


class SweepReport(Callback):
    """Hydra callback: when a sweep ends, write its report into the sweep directory, and exit
    with status 1 if any job failed (after every other job has run)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        done = report(root)
        console = Console()
        console.print(
            f"sweep: {done['runs']} runs finished, {done['failed']} failed; "
            f"report in {root / 'report.md'}"
        )
        if done["failed"]:
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sparse_mu.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("root", help="a sweep directory (or any folder with runs below it)")
    parser.add_argument("--out", help="where to write the report (default: ROOT)")
    args = parser.parse_args(argv)
    done = report(args.root, args.out)
    console = Console()
    console.print(
        f"{done['runs']} runs finished, {done['failed']} failed, {done['unreadable']} unreadable"
    )
    for path in done["files"]:
        console.print(f"  wrote {path}")
    if done["failed"] or done["unreadable"]:
        console.print(
            f"[red]failed and unreadable runs are listed in "
            f"{Path(args.out or args.root) / 'report.md'}[/red]"
        )
