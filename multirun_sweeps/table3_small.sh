#!/usr/bin/env bash
# Table 3 at CPU scale (docs/reproduction.md): cifar10_small and LeNet (memorises D), dense vs
# 95 % OMP, class-wise and random forgetting, six methods, three seeds; the methods' settings
# from sparse_mu/conf/tuned/paper/cifar10_small_*.yaml (tuning=paper).
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=2
exec python "$(dirname "$0")/../run.py" -m +experiment=table3_small "$@"
