#!/usr/bin/env bash
# Fig. 3 at CPU scale (docs/reproduction.md): FT and GA on OMP LeNets of growing sparsity,
# class-wise forgetting on cifar10_small, three seeds (the dense point: table3_small).
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=2
exec python "$(dirname "$0")/../run.py" -m +experiment=fig3_sparsity_small "$@"
