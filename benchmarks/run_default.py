"""Wall time of whole runs: `python run.py` cold and warm, and a tiny Table-3 sweep on digits.

    python benchmarks/run_default.py                    # cold + warm default run, then the sweep
    python benchmarks/run_default.py --repeats 3 --no-sweep
    mkdir /tmp/before && git archive main | tar -x -C /tmp/before
    python benchmarks/run_default.py --compare /tmp/before --no-sweep   # before/after

- cold: `python run.py` with an empty cache (SPARSE_MU_CACHE in a fresh temporary folder):
  trains the base model, prunes it (OMP 95 %, with retraining), builds the Retrain reference,
  evaluates, runs FT and evaluates it.
- warm: the same command again: base model, pruned model, Retrain reference and the original
  model's metrics come from the cache; FT and its evaluation run.
- sweep: `python run.py -m +experiment=table3_tiny tuning=none` when every unlearner it lists exists in
  sparse_mu/conf/unlearner, else `python run.py -m unlearner=ft,retrain pruner=dense,omp seed=0,1` (8 jobs),
  on an empty cache, one job after another.

Each figure is the wall time of the whole process (Python start-up, imports, W&B offline
included), median over `--repeats`; also the process's peak resident memory (MB). `--compare
DIR` times another checkout (an older commit) the same way, alternating with this one, and
prints the speed-up: the before/after of a change.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from omegaconf import OmegaConf

FALLBACK_SWEEP = ["unlearner=ft,retrain", "pruner=dense,omp", "seed=0,1"]


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the largest process of its tree) of `cmd`."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage, not all children's
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def sweep_overrides() -> tuple[list[str], str]:
    """The Table-3 preset if every unlearner it sweeps exists, else the fallback sweep."""
    conf = harness.ROOT / "sparse_mu" / "conf"
    preset = conf / "experiment" / "table3_tiny.yaml"
    if preset.is_file():
        params = OmegaConf.load(preset).hydra.sweeper.params
        if all((conf / "unlearner" / f"{u.strip()}.yaml").is_file() for u in str(params.unlearner).split(",")):
            # the methods' own epoch counts, as measured in docs/performance.md (the preset sets
            # tuning=paper, whose step-matched budgets make FT and l1-sparse 9x longer)
            untuned = ["tuning=none"] if (conf / "tuning" / "none.yaml").is_file() else []
            return ["+experiment=table3_tiny", *untuned], "table3_tiny preset"
    return FALLBACK_SWEEP, "fallback (table3_tiny needs unlearners not in sparse_mu/conf/unlearner yet)"


def measure(root: Path, sweep: list[str] | None) -> dict[str, tuple[float, float]]:
    """Cold run, warm run and (unless `sweep` is None) the sweep of the checkout at `root`."""
    python = [sys.executable, str(root / "run.py")]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SPARSE_MU_CACHE": f"{tmp}/cache", "SPARSE_MU_OUTPUT": f"{tmp}/out"}
        out["cold"] = timed(python, env, root)
        out["warm"] = timed(python, env, root)
    if sweep is not None:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "SPARSE_MU_CACHE": f"{tmp}/cache", "SPARSE_MU_OUTPUT": f"{tmp}/out"}
            out["sweep"] = timed([*python, "-m", *sweep], env, root)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=1, help="rounds to take the median of")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--compare", type=Path, default=None,
                   help="another checkout (e.g. `git archive main | tar -x -C /tmp/before`), timed in "
                        "alternation with this one: before/after ratios")
    args = p.parse_args(argv)
    import torch

    print(f"machine: {harness.machine(torch.device('cpu'))} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    overrides, what = sweep_overrides()
    roots = {"this": harness.ROOT} | ({"compare": args.compare.resolve()} if args.compare else {})
    results: dict[str, dict[str, list[tuple[float, float]]]] = {r: {} for r in roots}
    for _ in range(args.repeats):
        for name, root in roots.items():
            for key, value in measure(root, None if args.no_sweep else overrides).items():
                results[name].setdefault(key, []).append(value)
    labels = {"cold": "python run.py (empty cache)", "warm": "python run.py (cached stages)",
              "sweep": f"python run.py -m {' '.join(overrides)}  [{what}]"}
    for name, root in roots.items():
        print(f"{name} checkout: {root}")
        for key, runs in results[name].items():
            seconds = [s for s, _ in runs]
            print(f"  {labels[key]}: {harness.median(seconds):.1f} s (runs: {' '.join(f'{s:.1f}' for s in seconds)}), "
                  f"peak RSS {max(m for _, m in runs):.0f} MB")
    for key, runs in results["this"].items():
        line = f"{key}_s={harness.median([s for s, _ in runs]):.1f}"
        if args.compare:
            before = harness.median([s for s, _ in results["compare"][key]])
            line += f" compare_{key}_s={before:.1f} speedup_{key}={before / harness.median([s for s, _ in runs]):.2f}"
        print(line)


if __name__ == "__main__":
    main()
