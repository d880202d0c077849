#!/usr/bin/env bash
# Table 2 of the paper: l1-sparse MU with constant, linearly growing and linearly decaying L1
# Extra arguments are Hydra overrides, e.g. hydra/launcher=local hydra.launcher.n_jobs=4
exec python "$(dirname "$0")/../run.py" -m +experiment=table2_l1 "$@"
