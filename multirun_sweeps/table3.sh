#!/usr/bin/env bash
# Table 3 of the paper: dense vs 95 % OMP, class-wise and random forgetting, six methods,
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=table3 "$@"
