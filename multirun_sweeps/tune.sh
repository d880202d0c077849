#!/usr/bin/env bash
# The seed-0 line searches behind sparse_mu/conf/tuned/paper/<dataset>_<method>.yaml (docs/reproduction.md):
# dense and 95 % OMP, class-wise and random forgetting, one sweep per method, into
# $SWEEPS/tune_<dataset>/<method> (SWEEPS defaults to outputs/sweeps). The data set and model
# come from the arguments, which are Hydra overrides for every sweep:
#   multirun_sweeps/tune.sh dataset=cifar10_small arch=lenet
#   multirun_sweeps/tune.sh dataset=digits
# A diverging setting fails its job (listed in the report) and the next sweep still runs.
dataset=$(printf '%s\n' "$@" | sed -n 's/^dataset=//p' | tail -1)
run() { python "$(dirname "$0")/../run.py" -m tuning=paper pruner=dense,omp forget=class,random \
        hydra.sweep.dir="${SWEEPS:-outputs/sweeps}/tune_${dataset:-digits}/$1" "${@:2}"; }
run ga unlearner=ga unlearner.lr=1e-4,2e-4,5e-4,1e-3,3e-3,5e-3,1e-2 "$@"
run iu unlearner=iu unlearner.alpha=1,5,20 "$@"
run ff unlearner=ff unlearner.alpha=1e-8,1e-6 "$@"
run l1_sparse unlearner=l1_sparse unlearner.gamma=1e-4,5e-4,2e-3 forget=class "$@"
run ft unlearner=ft unlearner.lr=0.01,0.03 "$@"
