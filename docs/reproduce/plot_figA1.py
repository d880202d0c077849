"""Fig. A1 at our scale: MIA-Privacy against OMP sparsity, one line per method, from a sweep's
report.csv (`python -m sparse_mu.report SWEEP_DIR` writes it).

    python docs/reproduce/plot_figA1.py SWEEP_DIR/report.csv docs/reproduce/img/figA1_small.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def main(csv: str, out: str) -> None:
    rows = pd.read_csv(csv)
    methods = [m for m in ("retrain", "ft", "ga") if m in set(rows["method"])]
    methods += sorted(set(rows["method"]) - set(methods))
    fig, ax = plt.subplots(figsize=(5.2, 3.8), layout="constrained")
    for j, method in enumerate(methods):
        line = rows[rows["method"] == method].sort_values("target_sparsity")
        offset = (j - (len(methods) - 1) / 2) * 0.6  # points apart, so no series hides another
        ax.errorbar(line["target_sparsity"] + offset, line["MIA_privacy_mean"],
                    yerr=line["MIA_privacy_std"].fillna(0), capsize=3, marker="osd^v<>"[j % 7],
                    linestyle=["-", "--", ":", "-."][j % 4], label=f"{method} (seeds: {line['seeds'].min()})")
    ax.set_xlabel("OMP sparsity (%)")
    ax.set_ylabel("MIA-Privacy, D_r vs test (%; chance 50)")
    ax.set_title("cifar10_small, LeNet, random forgetting 10 %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:3])
