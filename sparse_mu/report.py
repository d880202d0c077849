"""Results as tables: one run's table on the console."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

ROWS = (("UA", "UA"), ("MIA_efficacy", "MIA-Efficacy"), ("RA", "RA"), ("TA", "TA"), ("RTE_s", "RTE (s)"))


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:+.2f}" if isinstance(v, float) and v != v else f"{v:.2f}"


def run_table(m: dict) -> Table:
    """Original model, unlearned model, Retrain and the gap, one row per metric."""
    title = (f"{m['unlearner']} on {m['dataset']}/{m['arch']}, pruner {m['pruner']} "
             f"(sparsity {m['sparsity']:.1f} %), forget {m['forget']} ({m['forget_size']} samples), seed {m['seed']}")
    t = Table(title=title, title_justify="left")
    for col in ("metric (%)", "original", "unlearned", "Retrain", "gap"):
        t.add_column(col, justify="right" if col != "metric (%)" else "left")
    ref, gap, orig = m.get("retrain") or {}, m.get("gap") or {}, m.get("original") or {}
    for key, label in ROWS:
        g = gap.get(key)
        t.add_row(label, _fmt(orig.get(key)), _fmt(m.get(key)), _fmt(ref.get(key)),
                  "-" if g is None else f"{g:+.2f}")
    if m.get("disparity_avg") is not None:
        t.caption = f"Disparity Average (mean |gap| over UA, MIA-Efficacy, RA, TA): {m['disparity_avg']:.2f}   device: {m['device']}"
    return t


def print_run(m: dict, console: Console | None = None) -> None:
    (console or Console()).print(run_table(m))
