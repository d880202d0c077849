"""The artifact cache: each stage's output stored under a hash of everything it depends on.

`<root>/<stage>/<key>/` holds the artifact's files and a `meta.json`. It is built in
`<key>.partial/` under a file lock and renamed into place when complete, so concurrent jobs
never build the same artifact twice and never read a half-written one; a build that died
leaves its `.partial/` folder (with any checkpoints) for the next attempt to resume from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

log = logging.getLogger("sparse_mu")

# Bump when a stage's algorithm changes, so no artifact of the old code is reused.
CACHE_VERSION = 1


def stable_hash(obj: object, length: int = 16) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def save_tensors(obj: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save of a dict of tensors, atomically; load with `load_tensors`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: `weights_only=True`, never unpickling objects."""
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class Artifact:
    stage: str
    key: str
    path: Path
    meta: dict
    reused: bool

    def file(self, name: str) -> Path:
        return self.path / name


class ArtifactCache:
    """`get_or_build(stage, inputs, build)`: reuse `<stage>/<hash(inputs)>` or build it.

    `build(workdir)` writes its files into `workdir` and returns metadata for `meta.json`.
    """

    def __init__(self, root: str | Path, lock_timeout: float = -1):
        self.root = Path(root)
        self.lock_timeout = lock_timeout

    def key(self, inputs: dict) -> str:
        return stable_hash({"version": CACHE_VERSION, **inputs})

    def _load(self, stage: str, key: str, path: Path) -> Artifact | None:
        meta = path / "meta.json"
        if meta.is_file():
            return Artifact(stage, key, path, json.loads(meta.read_text()), reused=True)
        return None

    def get_or_build(self, stage: str, inputs: dict, build: Callable[[Path], dict]) -> Artifact:
        key = self.key(inputs)
        stage_dir = self.root / stage
        final = stage_dir / key
        found = self._load(stage, key, final)
        if found is None:
            stage_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(str(stage_dir / f"{key}.lock"), timeout=self.lock_timeout):
                found = self._load(stage, key, final)  # another job may have built it meanwhile
                if found is None:
                    return self._build(stage, key, inputs, build, final)
        log.info("%s: reusing cached artifact %s", stage, final)
        return found

    def _build(self, stage, key, inputs, build, final: Path) -> Artifact:
        work = final.with_name(f"{key}.partial")
        if work.is_dir():
            log.info("%s: resuming the unfinished build in %s", stage, work)
        work.mkdir(exist_ok=True)
        start = time.time()
        meta = {"stage": stage, "key": key, "inputs": inputs, **build(work)}
        meta["build_seconds"] = round(time.time() - start, 3)
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(work / "meta.json", meta)
        if final.exists():  # a stale, incomplete folder (no meta.json): replace it
            shutil.rmtree(final)
        os.rename(work, final)
        log.info("%s: built and cached in %s (%.1fs)", stage, final, meta["build_seconds"])
        return Artifact(stage, key, final, meta, reused=False)
