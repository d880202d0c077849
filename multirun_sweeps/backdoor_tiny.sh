#!/usr/bin/env bash
# Backdoor cleanse on digits, CPU-sized: SA and ASR before/after FT vs OMP sparsity 0-99 %.
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=2
exec python "$(dirname "$0")/../run.py" -m +experiment=backdoor_tiny "$@"
