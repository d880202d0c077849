#!/usr/bin/env bash
# Fig. 3 on digits, CPU-sized: FT and GA against OMP sparsity, class-wise forgetting, 2 seeds.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=fig3_sparsity_tiny "$@"
