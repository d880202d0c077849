"""The artifact cache: each stage's output stored under a hash of everything it depends on.

`<root>/<stage>/<key>/` holds the artifact's files and a `meta.json`. It is built in
`<key>.partial/` under a file lock and renamed into place when complete, so concurrent jobs
(processes or nodes sharing the file system) never build the same artifact twice and never
read a half-written one. A build that dies leaves `<key>.partial/ckpt/` with its last
checkpoint, and the next attempt resumes from it.

Under multi-process data parallelism (Lightning DDP) every rank runs the whole pipeline: rank
0 locks, checkpoints and publishes; the other ranks train alongside it (resuming from rank 0's
checkpoint when there is one), write their copy into a temporary folder that they remove, and
then use the artifact rank 0 published (`paths.cache_dir` must be one folder for all ranks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from lightning.fabric.utilities.rank_zero import rank_zero_only

log = logging.getLogger("sparse_mu")

# Bump when a stage's algorithm changes, so no artifact of the old code is reused.
CACHE_VERSION = 2
# How long a DDP rank > 0 waits for rank 0 to publish an artifact both have just built.
PUBLISH_WAIT_S = 600.0


def global_rank() -> int:
    """This process's rank in a multi-process run (0 when there is none): Lightning's, read from
    the environment when Lightning is imported and set by the strategy once it has started."""
    return int(rank_zero_only.rank)


def stable_hash(obj: object, length: int = 16) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    _atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def save_tensors(obj: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save of a dict of tensors, atomically; load with `load_tensors`."""
    _atomic(path, lambda p: torch.save(obj, p))


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


Build = Callable[[Path, Path], dict]


class ArtifactCache:
    """`get_or_build(stage, inputs, build)`: reuse `<stage>/<hash(inputs)>` or build it.

    `build(workdir, ckpt_dir)` writes its files into `workdir`, keeps resumable checkpoints in
    `ckpt_dir` and returns metadata for `meta.json`.
    """

    def __init__(self, root: str | Path, lock_timeout: float = -1):
        self.root = Path(root)
        self.lock_timeout = lock_timeout

    def key(self, inputs: dict) -> str:
        return stable_hash({"version": CACHE_VERSION, **inputs})

    def _lock(self, stage: str, key: str) -> FileLock:
        (self.root / stage).mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / stage / f"{key}.lock"), timeout=self.lock_timeout)

    @staticmethod
    def _load(stage: str, key: str, path: Path) -> Artifact | None:
        meta = path / "meta.json"
        if meta.is_file():
            return Artifact(stage, key, path, json.loads(meta.read_text()), reused=True)
        return None

    def get_or_build(self, stage: str, inputs: dict, build: Build) -> Artifact:
        key = self.key(inputs)
        final = self.root / stage / key
        found = self._load(stage, key, final)
        if found is None and global_rank() != 0:
            return self._build_private(stage, key, inputs, build, final)
        if found is None:
            with self._lock(stage, key):
                found = self._load(stage, key, final)  # another job may have built it meanwhile
                if found is None:
                    return self._build(stage, key, inputs, build, final)
        log.info("%s: reusing cached artifact %s", stage, final)
        return found

    def _build(self, stage: str, key: str, inputs: dict, build: Build, final: Path) -> Artifact:
        work = final.with_name(f"{key}.partial")
        ckpt = work / "ckpt"
        if (ckpt / "last.ckpt").is_file():
            log.info("%s: resuming the interrupted build from %s", stage, ckpt)
        work.mkdir(parents=True, exist_ok=True)
        meta = self._run(stage, key, inputs, build, work, ckpt)
        write_json(work / "meta.json", meta)
        shutil.rmtree(ckpt, ignore_errors=True)
        if final.exists():  # an incomplete folder without meta.json: replace it
            shutil.rmtree(final)
        os.rename(work, final)
        log.info("%s: built and cached in %s (%.1fs)", stage, final, meta["build_seconds"])
        return Artifact(stage, key, final, meta, reused=False)

    def _build_private(self, stage: str, key: str, inputs: dict, build: Build, final: Path) -> Artifact:
        """A DDP rank > 0: build alongside rank 0, then use rank 0's published artifact.

        Every rank must run the build (its training loops synchronise gradients across ranks),
        but only rank 0 publishes. This rank's copy, identical (DDP keeps the weights in step),
        goes into a temporary folder removed at once, and the rank waits for rank 0's artifact:
        nothing of it stays in the system temp directory.
        """
        ckpt = final.with_name(f"{key}.partial") / "ckpt"
        with tempfile.TemporaryDirectory(prefix=f"sparse_mu-{stage}-") as work:
            self._run(stage, key, inputs, build, Path(work), ckpt)
        deadline = time.monotonic() + PUBLISH_WAIT_S
        while (found := self._load(stage, key, final)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{stage}: rank {global_rank()} built {key} but rank 0 did not publish it "
                                   f"in {final} within {PUBLISH_WAIT_S:.0f}s; under DDP every rank must see "
                                   "the same paths.cache_dir")
            time.sleep(0.1)
        return found

    @staticmethod
    def _run(stage: str, key: str, inputs: dict, build: Build, work: Path, ckpt: Path) -> dict:
        start = time.time()
        meta = {"stage": stage, "key": key, "inputs": inputs, **build(work, ckpt)}
        meta["build_seconds"] = round(time.time() - start, 3)
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        return meta

    @contextmanager
    def scratch(self, stage: str, inputs: dict) -> Iterator[Path]:
        """A checkpoint folder for an uncached loop, kept if it fails, removed if it succeeds.

        Rerunning the same job resumes from it; identical jobs running at once take turns.
        """
        key = self.key(inputs)
        ckpt = self.root / stage / f"{key}.partial" / "ckpt"
        if global_rank() != 0:
            yield ckpt
            return
        with self._lock(stage, key):
            if (ckpt / "last.ckpt").is_file():
                log.info("%s: resuming the interrupted run from %s", stage, ckpt)
            yield ckpt
            shutil.rmtree(ckpt.parent, ignore_errors=True)
