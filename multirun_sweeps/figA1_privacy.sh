#!/usr/bin/env bash
# Fig. A1 of the paper: MIA-Privacy of unlearned models vs sparsity, CIFAR-10 / ResNet-18.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=figA1_privacy "$@"
