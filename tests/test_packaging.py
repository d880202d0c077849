"""Packaging: every import declared, floors that run, the configs shipped, a `sparse-mu` command."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement

from tests.conftest import CONF, ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REQUIRES = {Requirement(r).name.lower(): Requirement(r) for r in PROJECT["project"]["dependencies"]}


def _imports() -> set[str]:
    """Top-level modules imported anywhere in the package."""
    found = set()
    for path in (ROOT / "sparse_mu").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_every_third_party_import_is_declared():
    dists = importlib.metadata.packages_distributions()
    stdlib = sys.stdlib_module_names
    missing = {}
    for module in _imports() - stdlib - {"sparse_mu"}:
        names = {d.lower() for d in dists.get(module, [module])}
        if not names & set(REQUIRES):
            missing[module] = sorted(names)
    assert not missing, f"imported but not in [project.dependencies]: {missing}"


def test_floors_exclude_releases_known_not_to_work():
    assert not REQUIRES["lightning"].specifier.contains("2.5.5")  # no trainer.fit(weights_only=...)
    assert REQUIRES["lightning"].specifier.contains("2.6.0")
    assert not REQUIRES["torch"].specifier.contains("2.15.0")  # the cap: no multi-GB download
    assert "torchmetrics" in REQUIRES


def test_every_config_file_is_package_data():
    """A file under sparse_mu/conf/ that the package-data globs miss would be absent after `pip
    install .` (the command would fail to compose)."""
    globs = PROJECT["tool"]["setuptools"]["package-data"]["sparse_mu"]
    shipped = {p for g in globs for p in (ROOT / "sparse_mu").glob(g)}
    files = {p for p in CONF.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py"}
    assert files and files <= shipped, sorted(map(str, files - shipped))
    assert (CONF / "__init__.py").is_file()  # Hydra finds an installed config folder as a module


def test_python_m_sparse_mu_composes_from_another_directory(tmp_path):
    """The configs come with the package, not from the working directory."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "sparse_mu", "--cfg", "job", "pruner=dense"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "sparse_mu.pruning.Dense" in proc.stdout and "sparse_mu.data.Digits" in proc.stdout


def test_wheel_ships_the_configs_and_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("sparse_mu-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"sparse_mu/conf/__init__.py", "sparse_mu/conf/run.yaml", "sparse_mu/conf/hydra/default.yaml",
            "sparse_mu/conf/tuned/paper/digits_ft.yaml", "sparse_mu/__main__.py"} <= names
    assert "sparse-mu = sparse_mu.cli:main" in entry
    assert not [n for n in names if n.startswith(("tests/", "build/"))]
