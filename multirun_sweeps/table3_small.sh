#!/usr/bin/env bash
# Table 3 at CPU scale (docs/reproduction.md): cifar10_small and LeNet (memorises D), dense vs
# 95 % OMP, class-wise and random forgetting, six methods, three seeds; every iterative method at
# <= 10 % of Retrain with the cifar10_small studies' values (sparse_mu/conf/tuned/budget/); tuning=paper: the old runs.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=2
exec python "$(dirname "$0")/../run.py" -m +experiment=table3_small "$@"
