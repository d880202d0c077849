"""A seeded random sample of mutant names, per module, for a mutation score estimated from a sample.

    python benchmarks/mutation_sample.py FRACTION MODULE_PREFIX [...]   # one name per line

Reads the mutants mutmut generated (mutants/**/*.py.meta; `benchmarks/mutation.sh 'x'` makes them
without running any), takes ceil(FRACTION * n) of each module's n mutants with random.Random(0),
and prints them for `benchmarks/mutation.sh $(python benchmarks/mutation_sample.py ...)`.
mutmut has no sampling of its own; a full run of these modules takes hours on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path


def sample(fraction: float, prefixes: list[str], seed: int = 0) -> list[str]:
    picked = []
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        names = sorted(k for k in json.loads(meta.read_text())["exit_code_by_key"]
                       if k.startswith(tuple(prefixes)))
        if names:
            picked += random.Random(seed).sample(names, math.ceil(fraction * len(names)))
    return picked


if __name__ == "__main__":
    print("\n".join(sample(float(sys.argv[1]), sys.argv[2:])))
