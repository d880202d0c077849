#!/usr/bin/env bash
# Mutation testing of sparse_mu/unlearn, sparse_mu/pruning and sparse_mu/metrics with mutmut 3.
# Not part of the default test run (it takes hours on 2 CPU cores); see docs/testing.md.
#
#   benchmarks/mutation.sh                         # every mutant of the three packages
#   benchmarks/mutation.sh 'sparse_mu.metrics.*'   # only some (mutmut's name globs)
#
# Configuration (what is mutated, which tests run): [tool.mutmut] in pyproject.toml. Results are
# cached in mutants/ (git-ignored): a second call runs only mutants without a result, so an
# interrupted run continues where it stopped. `JOBS=2` runs two mutants at a time (default 1);
# the score and the survivors go to mutants/score.txt, each survivor's diff to mutants/survivors.txt
# (benchmarks/mutation_survivors.py; `mutmut show` takes ~20 s a mutant here).
# `FRESH_STATS=1` drops mutmut's test map first, so it is collected again from all tests: do it
# after a source file changed, since mutmut 3.8.1 then keeps the map of the changed modules only
# and marks every other module's mutants "no tests".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BIN=$(dirname "$(command -v "$PY")")
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=disabled

[ "${FRESH_STATS:-0}" = 1 ] && rm -f mutants/mutmut-stats.json
nice -n 15 "$BIN/mutmut" run --max-children "${JOBS:-1}" "$@" || true
"$BIN/mutmut" export-cicd-stats >/dev/null
"$PY" - <<'PY' | tee mutants/score.txt
import json
s = json.load(open("mutants/mutmut-cicd-stats.json"))
# "total" counts every mutant of the three packages, also those this call did not run
run = ("killed", "timeout", "survived", "no_tests", "suspicious", "segfault")
tested = sum(s.get(k, 0) for k in run)
killed = s["killed"] + s.get("timeout", 0)
print(f"killed {killed} of {tested} mutants run ({100 * killed / max(tested, 1):.1f} %; "
      f"{s['total'] - tested} of {s['total']} not run yet): {s}")
PY
"$BIN/mutmut" results | tee -a mutants/score.txt
"$PY" benchmarks/mutation_survivors.py > mutants/survivors.txt
