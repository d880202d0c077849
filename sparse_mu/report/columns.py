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
    "cost_vs_retrain_steps",
    "cost_vs_retrain_s",
)
# The per-example tests' table (docs/evaluation.md): metrics.json's `per_example` (unlearned
# models) and `per_example_original` (the original) against the reference store.
PER_EXAMPLE_METRICS = ("forget_ulira_auc", "forget_ulira_tpr_at_1fpr", "retain_ulira_auc", "forget_F", "score",
                       "forget_klom", "retain_klom", "forget_js", "test_js", "forget_act", "weight_l2")
PER_EXAMPLE_LABELS = {"forget_ulira_auc": "U-LiRA AUC D_f", "forget_ulira_tpr_at_1fpr": "TPR@1%FPR D_f",
                      "retain_ulira_auc": "U-LiRA AUC D_r", "forget_F": "F D_f", "score": "score",
                      "forget_klom": "KLOM D_f", "retain_klom": "KLOM D_r", "forget_js": "JS D_f",
                      "test_js": "JS test", "forget_act": "act. dist. D_f", "weight_l2": "L2 weights"}
# A per-run flag (sparse_mu.cost): the table counts the flagged runs of each row (e.g. "1/3").
FLAG = "damaged"
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
    "cost_vs_retrain_steps": "cost vs Retrain (steps)",
    "cost_vs_retrain_s": "cost vs Retrain (s)",
    FLAG: "damaged",
}
