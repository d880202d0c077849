#!/usr/bin/env bash
# Fig. A1 on cifar10_small (LeNet), CPU-sized: MIA-Privacy vs OMP sparsity for Retrain, FT and GA
# at <= 10 % of Retrain's steps (untuned settings; docs/reproduce/figA1.md).
# Extra arguments are Hydra overrides, e.g. pruner.sparsity=0.5 seed=0,1,2
exec python "$(dirname "$0")/../run.py" -m +experiment=figA1_privacy_small "$@"
