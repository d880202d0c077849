#!/usr/bin/env bash
# Fig. 6 of the paper: backdoor cleanse (SA, ASR) vs OMP sparsity, CIFAR-10 / ResNet-18, FT and l1-sparse.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=fig6_backdoor "$@"
