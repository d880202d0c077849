#!/usr/bin/env bash
# Fig. 3 of the paper: approximate unlearning vs model sparsity (OMP), class-wise and random
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=fig3_sparsity "$@"
