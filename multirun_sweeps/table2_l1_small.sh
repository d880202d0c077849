#!/usr/bin/env bash
# Table 2 at CPU scale (docs/reproduction.md): l1-sparse's gamma schedules on the dense LeNet,
# random forgetting on cifar10_small, three seeds.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=2
exec python "$(dirname "$0")/../run.py" -m +experiment=table2_l1_small "$@"
