#!/usr/bin/env bash
# Fig. 4 on digits, CPU-sized: FT after OMP, IMP and SynFlow at three sparsities, 3 seeds.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=fig4_pruners_tiny "$@"
