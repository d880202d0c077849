#!/usr/bin/env bash
# The tuning studies behind sparse_mu/conf/tuned/budget/ (docs/sweeps.md, "Tuning studies"): each
# preset sparse_mu/conf/experiment/tune_<dataset>_<method>.yaml is an Optuna study (TPE, fixed trial
# count) at unlearner.budget 0.1, on a held-out seed and class, run once per pruner with the same
# number of trials. Each study writes optimization_results.yaml (best params and value) and the
# trials' runs into outputs/studies/tune_<dataset>_<method>_<pruner>/<date_time>/.
#   multirun_sweeps/tune.sh                 # every digits study (FT, GA, l1-sparse), dense and OMP 95 %
#   multirun_sweeps/tune.sh tune_digits_ft  # one study, both pruners
# Extra arguments after the study names are Hydra overrides for every study.
set -euo pipefail
cd "$(dirname "$0")/.."
studies=(); while [[ $# -gt 0 && $1 == tune_* ]]; do studies+=("$1"); shift; done
[[ ${#studies[@]} -gt 0 ]] || studies=(tune_digits_ft tune_digits_ga tune_digits_l1_sparse)
# A study with a failed (diverged) trial exits 1 after it finishes (the trial scored 300, the report
# lists it); the next study still runs, and this script exits 1 at the end.
status=0
for study in "${studies[@]}"; do
  for pruner in dense omp; do
    python run.py -m +experiment="$study" pruner="$pruner" "$@" || status=1
  done
done
exit $status
