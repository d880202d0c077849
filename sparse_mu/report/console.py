"""One run's results as a table on the console (printed at the end of every run)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from sparse_mu.cost import table_notes

ROWS = (
    ("UA", "UA"),
    ("MIA_efficacy", "MIA-Efficacy"),
    ("RA", "RA"),
    ("TA", "TA"),
    ("RTE_s", "RTE (s)"),
)
BACKDOOR_ROWS = (("SA", "SA"), ("ASR", "ASR"), ("ASR_legacy", "ASR (legacy)"))


# -- one run ------------------------------------------------------------------------------


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def run_table(m: dict) -> Table:
    """Original model, unlearned model, Retrain and the gap, one row per metric."""
    title = (
        f"{m['unlearner']} on {m['dataset']}/{m['arch']}, pruner {m['pruner']} "
        f"(sparsity {m['sparsity']:.1f} %), forget {m['forget']} ({m['forget_size']} samples), "
        f"seed {m['seed']}"
    )
    t = Table(title=title, title_justify="left")
    for col in ("metric (%)", "original", "unlearned", "Retrain", "gap"):
        t.add_column(col, justify="left" if col == "metric (%)" else "right")
    ref, gap, orig = m.get("retrain") or {}, m.get("gap") or {}, m.get("original") or {}
    rows = ROWS + (BACKDOOR_ROWS if "ASR" in m else ())
    for key, label in rows:
        g = gap.get(key)
        t.add_row(
            label,
            _fmt(orig.get(key)),
            _fmt(m.get(key)),
            _fmt(ref.get(key)),
            "-" if g is None else f"{g:+.2f}",
        )
    notes = []
    if m.get("disparity_avg") is not None:
        notes.append(
            "Disparity Average (mean |gap| over UA, MIA-Efficacy, RA, TA): "
            f"{m['disparity_avg']:.2f}"
            f"   device: {m['device']}"
        )
    if m.get("flops_dense"):
        notes.append(f"FLOPs per image: {m['flops'] / 1e6:.3g} M of {m['flops_dense'] / 1e6:.3g} M dense "
                     f"({m['flops_percent']:.1f} %), channel sparsity "
                     f"{m.get('channel_sparsity', 0.0):.1f} %")
    notes += table_notes(m)
    if m.get("transfer_acc"):
        acc, secs = m["transfer_acc"], m["transfer_time_s"]
        notes.append(
            "transfer (linear probe) accuracy / time: "
            + ", ".join(f"{k} {_fmt(acc[k])} % / {_fmt(secs[k])} s" for k in acc)
        )
    if "mask_IoU" in m:
        notes.append(
            f"un-pruning vs retrain-then-prune: mask IoU {m['mask_IoU']:.2f} (prune-then-unlearn "
            f"{m['mask_IoU_original']:.2f}), IoM {m['mask_IoM']:.2f} "
            f"({m['mask_IoM_original']:.2f}), "
            f"KL_test {m['KL_test']:.4f} ({m['KL_test_original']:.4f}), "
            f"KL_forget {m['KL_forget']:.4f} ({m['KL_forget_original']:.4f})"
        )
    t.caption = "\n".join(notes) or None
    return t


def print_run(m: dict, console: Console | None = None) -> None:
    (console or Console()).print(run_table(m))
