"""The cache verifies what it serves and heals; file-system faults are one line and lose nothing."""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparse_mu import cache as cache_mod
from sparse_mu import failures, pipeline
from sparse_mu.cache import ArtifactCache, load_tensors, save_tensors
from sparse_mu.errors import ConfigError
from tests.conftest import ROOT, TINY, compose_cfg


def _builder(calls: list):
    def make(work: Path, ckpt: Path) -> dict:
        calls.append(ckpt)
        save_tensors({"w": torch.arange(1000.0)}, work / "final.pt")
        return {"value": 1}
    return make


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:100])


def _flip_a_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


DAMAGE = {
    "truncated file": (lambda art: _truncate(art / "final.pt"), "final.pt has 100 bytes"),
    "deleted file": (lambda art: (art / "final.pt").unlink(), "final.pt is missing"),
    "altered file": (lambda art: _flip_a_byte(art / "final.pt"), "final.pt does not match its recorded sha256"),
    "garbage meta.json": (lambda art: (art / "meta.json").write_text("{not json"), "meta.json is unreadable"),
    "deleted meta.json": (lambda art: (art / "meta.json").unlink(), "meta.json is missing"),
    "meta.json without a file record": (
        lambda art: (art / "meta.json").write_text(json.dumps({"stage": "base"})), "has no file record"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_artifact_is_rebuilt_with_one_warning(kind, tmp_path, caplog):
    calls: list = []
    first = ArtifactCache(tmp_path).get_or_build("base", {"x": 1}, _builder(calls))
    assert set(first.meta["files"]) == {"final.pt"} and first.meta["files"]["final.pt"]["size"] > 0
    damage, reason = DAMAGE[kind]
    damage(first.path)
    cache_mod._VERIFIED.clear()  # a new process: hashes are checked once per process
    caplog.set_level(logging.WARNING, "sparse_mu")
    again = ArtifactCache(tmp_path).get_or_build("base", {"x": 1}, _builder(calls))
    assert len(calls) == 2 and not again.reused
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(first.path) in warnings[0] and reason in warnings[0], warnings
    assert load_tensors(again.file("final.pt"))["w"].shape == (1000,)
    caplog.clear()
    assert ArtifactCache(tmp_path).get_or_build("base", {"x": 1}, _builder(calls)).reused  # healed
    assert len(calls) == 2 and not caplog.records


def test_unreadable_resume_checkpoint_is_discarded_with_one_warning(tmp_path, caplog):
    cache = ArtifactCache(tmp_path)
    ckpt = tmp_path / "base" / f"{cache.key({'x': 1})}.partial" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "last.ckpt").write_bytes(b"garbage, not a checkpoint")
    seen = []
    make = _builder([])

    def build(work: Path, ck: Path) -> dict:
        seen.append((ck / "last.ckpt").exists())
        return make(work, ck)

    caplog.set_level(logging.WARNING, "sparse_mu")
    cache.get_or_build("base", {"x": 1}, build)
    assert seen == [False]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "discarding the unreadable checkpoint" in warnings[0] and "last.ckpt" in warnings[0]


def test_input_error_during_a_build_leaves_no_partial_folder(tmp_path):
    def build(work: Path, ckpt: Path) -> dict:
        (ckpt).mkdir(parents=True)
        (ckpt / "last.ckpt").write_bytes(b"x")
        raise ConfigError("unlearner.lr must be > 0; got -1")

    with pytest.raises(ConfigError):
        ArtifactCache(tmp_path).get_or_build("base", {"x": 1}, build)
    assert not list((tmp_path / "base").glob("*.partial"))
    with pytest.raises(ConfigError), ArtifactCache(tmp_path).scratch("unlearn", {"x": 1}) as ckpt:
        ckpt.mkdir(parents=True)
        raise ConfigError("diverged")
    assert not list((tmp_path / "unlearn").glob("*.partial"))


def _forbid_writes(monkeypatch, root: Path, code: int = errno.EROFS) -> None:
    """Every Python-level write under `root` raises OSError(code), as a read-only mount would."""
    root = str(root.resolve())

    def inside(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)).startswith(root)

    def deny(path):
        raise OSError(code, os.strerror(code), os.fspath(path))

    def guarded(fn, writes=lambda *a, **k: True):
        def wrapper(path, *args, **kwargs):
            if inside(path) and writes(*args, **kwargs):
                deny(path)
            return fn(path, *args, **kwargs)
        return wrapper

    real_open, real_os_open = builtins.open, os.open
    writing = lambda mode="r", *a, **k: any(c in mode for c in "wax+")  # noqa: E731
    monkeypatch.setattr(builtins, "open", guarded(real_open, writing))
    monkeypatch.setattr(io, "open", guarded(real_open, writing))
    monkeypatch.setattr(os, "open", guarded(real_os_open, lambda flags, *a, **k: flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
    for name in ("mkdir", "unlink", "rmdir", "replace", "rename"):
        monkeypatch.setattr(os, name, guarded(getattr(os, name)))
    monkeypatch.setattr(shutil, "rmtree", guarded(shutil.rmtree))


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


SETTINGS = [*TINY, "pruner=dense", "forget=random", "forget.count=50"]


def test_complete_cache_heals_and_serves_read_only(tmp_path, monkeypatch, caplog):
    first = pipeline.run(compose_cfg(SETTINGS, tmp_path), tmp_path / "run1")
    base = next((tmp_path / "cache" / "base").glob("*/final.pt"))
    _truncate(base)
    (next((tmp_path / "cache" / "reference").glob("*/meta.json"))).write_text("garbage")
    caplog.set_level(logging.WARNING, "sparse_mu")
    healed = pipeline.run(compose_cfg(SETTINGS, tmp_path), tmp_path / "run2")
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 2 and any("final.pt has 100 bytes" in m for m in damaged), damaged
    for key in ("UA", "RA", "TA", "MIA_efficacy"):
        assert healed[key] == pytest.approx(first[key], abs=1e-9)
        assert healed["retrain"][key] == pytest.approx(first["retrain"][key], abs=1e-9)

    before = _tree(tmp_path / "cache")
    cache_mod._VERIFIED.clear()
    caplog.clear()
    _forbid_writes(monkeypatch, tmp_path / "cache")
    served = pipeline.run(compose_cfg(SETTINGS, tmp_path), tmp_path / "run3")
    monkeypatch.undo()
    assert _tree(tmp_path / "cache") == before  # nothing written, no lock file
    assert "cannot write to the cache" in caplog.text  # the unlearning loop runs without checkpoints
    assert "built and cached" not in caplog.text
    for key in ("UA", "RA", "TA", "MIA_efficacy"):
        assert served["retrain"][key] == pytest.approx(first["retrain"][key], abs=1e-9)


@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "no permission")])
def test_unwritable_cache_is_one_line_naming_the_path(code, hint, tmp_path, monkeypatch):
    _forbid_writes(monkeypatch, tmp_path / "cache", code)
    with pytest.raises(OSError) as err:
        pipeline.run(compose_cfg(SETTINGS, tmp_path), tmp_path / "run")
    monkeypatch.undo()
    message = failures.one_line(err.value)
    assert message is not None and message.startswith(str(tmp_path / "cache")) and hint in message, message
    failures.record(err.value, tmp_path / "run")
    assert (tmp_path / "run" / "FAILED").read_text() == f"error: {message}\n"


def test_metrics_are_kept_when_metrics_json_cannot_be_written(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _forbid_writes(monkeypatch, out, errno.ENOSPC)
    with pytest.raises(OSError) as err:
        failures.save_results(out / "metrics.json", {"UA": 12.5})
    monkeypatch.undo()
    message = failures.one_line(err.value)
    assert message.startswith(f"{out / 'metrics.json'}: No space left on device; the finished run's metrics are "
                              "saved in "), message
    fallback = Path(message.split("saved in ")[1].split(" instead")[0])
    assert json.loads(fallback.read_text()) == {"UA": 12.5}
    fallback.unlink()


def test_a_bug_keeps_its_traceback_in_failed(tmp_path):
    try:
        raise RuntimeError("boom")
    except RuntimeError as e:
        assert failures.record(e, tmp_path) is None
    text = (tmp_path / "FAILED").read_text()
    assert text.startswith("error: RuntimeError: boom\n") and "Traceback" in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args, "logger=csv"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs an unwritable /sys")
def test_cli_unwritable_output_and_cache_dirs_are_one_line(tmp_path):
    out = _cli("hydra.run.dir=/sys/sparse_mu_out")
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout
    assert "error: cannot create the output directory /sys/sparse_mu_out" in out.stderr
    run_dir = tmp_path / "run"
    out = _cli(f"hydra.run.dir={run_dir}", "paths.cache_dir=/sys/sparse_mu_cache")
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text
    assert "error: /sys/sparse_mu_cache: " in text
    assert (run_dir / "FAILED").read_text().startswith("error: /sys/sparse_mu_cache: ")
