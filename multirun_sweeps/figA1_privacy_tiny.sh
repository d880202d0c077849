#!/usr/bin/env bash
# Fig. A1 on digits, CPU-sized: MIA-Privacy vs OMP sparsity for Retrain, FT and GA.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=figA1_privacy_tiny "$@"
