"""The diff of every surviving mutant, read from mutants/ (as `mutmut show`, much faster).

    python benchmarks/mutation_survivors.py [MODULE_PREFIX ...]  > mutants/survivors.txt

A mutant is `<module>.<function>__mutmut_<n>`; its code and the original (`..._orig`) are
functions in mutants/<module path>.py, and its result is in the `.meta` file beside it
(exit code 0: survived).
"""

from __future__ import annotations

import ast
import difflib
import json
import sys
from pathlib import Path


def functions(path: Path) -> dict[str, str]:
    src = path.read_text()
    return {n.name: ast.get_source_segment(src, n) for n in ast.walk(ast.parse(src))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def main(prefixes: list[str]) -> None:
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        survived = [k for k, v in json.loads(meta.read_text())["exit_code_by_key"].items() if v == 0]
        survived = [k for k in survived if not prefixes or k.startswith(tuple(prefixes))]
        if not survived:
            continue
        code = functions(meta.with_suffix(""))
        for name in sorted(survived, key=lambda k: (k.rsplit("__mutmut_", 1)[0], int(k.rsplit("_", 1)[1]))):
            function = name.rsplit(".", 1)[1]
            orig_name = function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
            original = code.get(orig_name, "").splitlines()
            mutant = code.get(function, "").replace(function, orig_name, 1).splitlines()
            print("==", name)
            for line in difflib.unified_diff(original, mutant, lineterm="", n=0):
                if not line.startswith(("+++", "---", "@@")):
                    print("  ", line.strip())


if __name__ == "__main__":
    main(sys.argv[1:])
