#!/usr/bin/env bash
# The tuning studies behind sparse_mu/conf/tuned/budget/ (docs/sweeps.md, "Tuning studies"): each
# preset sparse_mu/conf/experiment/tune_<data>_<method>.yaml (tune_digits_*; tune_small_*: cifar10_small)
# is an Optuna study (TPE, fixed trial count) at a fixed unlearner.budget <= 0.1, on a held-out seed
# and class, run once per pruner with the same number of trials. Each study writes
# optimization_results.yaml (best params and value) and the trials' runs into
# outputs/studies/tune_<data>_<method>_<pruner>/<date_time>/.
#   multirun_sweeps/tune.sh                 # every study (digits and cifar10_small; FT, GA, l1-sparse), dense and OMP 95 %
#   multirun_sweeps/tune.sh tune_digits_ft  # one study, both pruners
#   multirun_sweeps/tune.sh tune_small_ft tune_small_l1_sparse tune_small_ga   # the cifar10_small studies (~35 CPU-min)
# Extra arguments after the study names are Hydra overrides for every study.
set -euo pipefail
cd "$(dirname "$0")/.."
studies=(); while [[ $# -gt 0 && $1 == tune_* ]]; do studies+=("$1"); shift; done
if [[ ${#studies[@]} -eq 0 ]]; then
  for f in sparse_mu/conf/experiment/tune_*.yaml; do studies+=("$(basename "$f" .yaml)"); done
fi
# A study with a failed (diverged) trial exits 1 after it finishes (the trial scored 300, the report
# lists it); the next study still runs, and this script exits 1 at the end.
status=0
for study in "${studies[@]}"; do
  for pruner in dense omp; do
    python run.py -m +experiment="$study" pruner="$pruner" "$@" || status=1
  done
done
exit $status
