#!/usr/bin/env bash
# Fig. 4 of the paper: FT unlearning on models pruned by SynFlow, OMP and IMP, against sparsity,
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=fig4_pruners "$@"
