#!/usr/bin/env bash
# Table 2 on digits, CPU-sized: the three L1 schedules, random forgetting, dense, 2 seeds.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=table2_l1_tiny "$@"
