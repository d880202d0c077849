#!/usr/bin/env bash
# Table 3 on digits, CPU-sized: 2 pruners x 2 forgetting settings x 4 methods x 2 seeds.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=table3_tiny "$@"
