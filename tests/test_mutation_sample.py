"""benchmarks/mutation_sample.py: a seeded sample of ceil(fraction * n) mutants of each named module."""

import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location("mutation_sample", Path(__file__).parents[1] / "benchmarks/mutation_sample.py")
mutation_sample = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutation_sample)


def _meta(root: Path, module: str, n: int) -> list[str]:
    path = root / "mutants" / (module.replace(".", "/") + ".py.meta")
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"{module}.x_f__mutmut_{i}" for i in range(1, n + 1)]
    path.write_text(json.dumps({"exit_code_by_key": {k: None for k in names}}))
    return names


def test_samples_each_named_module_by_its_own_size_seeded(tmp_path, monkeypatch):
    a = _meta(tmp_path, "pkg.a", 40)
    b = _meta(tmp_path, "pkg.b", 7)
    _meta(tmp_path, "pkg.c", 30)
    monkeypatch.chdir(tmp_path)
    picked = mutation_sample.sample(0.1, ["pkg.a", "pkg.b"])
    assert len([k for k in picked if k in a]) == 4 and len([k for k in picked if k in b]) == 1
    assert not [k for k in picked if k.startswith("pkg.c")] and len(set(picked)) == len(picked)
    assert picked == mutation_sample.sample(0.1, ["pkg.a", "pkg.b"])
    assert picked != mutation_sample.sample(0.1, ["pkg.a", "pkg.b"], seed=1)
    assert sorted(mutation_sample.sample(1.0, ["pkg.b"])) == sorted(b)
