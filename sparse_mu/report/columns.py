"""Which metrics the report shows and their labels (one place for every table and plot)."""

from __future__ import annotations

from sparse_mu.metrics import BACKDOOR_KEYS

# Cells of these metrics also show the gap to Retrain.
GAP_METRICS = ("UA", "MIA_efficacy", "RA", "TA")
# Percentages (0-100), one plot panel each when the runs have them.
PLOT_METRICS = (*GAP_METRICS, *BACKDOOR_KEYS, "MIA_privacy", "disparity_avg")
# Table columns, in this order, when the runs have them (backdoor metrics only in backdoor runs).
# Add a metric here to show it; a dotted name is a key of a dict in metrics.json (flattened).
TABLE_METRICS = (
    *GAP_METRICS,
    "RTE_s",
    *BACKDOOR_KEYS,
    "MIA_privacy",
    "disparity_avg",
    "steps",
    "cost_vs_retrain.steps",
    "cost_vs_retrain.seconds",
)
# A per-run flag: the table counts the flagged runs of each row (e.g. "1/3").
FLAG = "damage"
LABELS = {
    "UA": "UA",
    "MIA_efficacy": "MIA-Efficacy",
    "RA": "RA",
    "TA": "TA",
    "RTE_s": "RTE (s)",
    "SA": "SA",
    "ASR": "ASR",
    "ASR_legacy": "ASR (legacy)",
    "MIA_privacy": "MIA-Privacy",
    "disparity_avg": "Disparity Avg",
    "cost_vs_retrain.steps": "cost vs Retrain (steps)",
    "cost_vs_retrain.seconds": "cost vs Retrain (s)",
    FLAG: "damaged",
}
