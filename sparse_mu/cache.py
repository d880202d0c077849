"""The artifact cache: each stage's output stored under a hash of everything it depends on.

`<root>/<stage>/<key>/` holds the artifact's files and a `meta.json`. It is built in
`<key>.partial/` under a file lock and renamed into place when complete, so concurrent jobs
(processes or nodes sharing the file system) never build the same artifact twice and never
read a half-written one. A build that dies leaves `<key>.partial/ckpt/` with its last
checkpoint, and the next attempt resumes from it (a checkpoint that is not a readable file is
discarded with a warning); a build stopped by bad input (`ConfigError`) leaves nothing.

`meta.json` is written last and records the size and sha256 of every file of the artifact.
Serving an artifact checks them (sizes always, hashes once per process: 65 ms for ResNet-18's
45 MB on one CPU core); a damaged artifact (a file missing, truncated or altered, or an
unreadable meta.json) is rebuilt, with one warning naming it. A complete, verified artifact is
served without writing anything, so a cache on a read-only file system serves every stage.

Under multi-process data parallelism (Lightning DDP) every rank runs the whole pipeline: rank
0 locks, checkpoints and publishes; the other ranks train alongside it (resuming from rank 0's
checkpoint when there is one), write their copy into a temporary folder that they remove, and
then use the artifact rank 0 published (`paths.cache_dir` must be one folder for all ranks).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from lightning.fabric.utilities.rank_zero import rank_zero_only

from sparse_mu.errors import ConfigError

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
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise
        raise OSError(errno.EIO, f"cannot write ({str(e).splitlines()[0]})", str(path)) from e


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    _atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def save_tensors(obj: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save of a dict of tensors, atomically; load with `load_tensors`."""
    _atomic(path, lambda p: torch.save(obj, p))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: `weights_only=True`, never unpickling objects."""
    return torch.load(path, map_location="cpu", weights_only=True)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_record(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file under `folder` but meta.json, by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "meta.json")
    return {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256(p)} for p in files}


_VERIFIED: set[tuple[str, int]] = set()  # (artifact folder, meta.json mtime) hashed by this process


def damage(path: Path, meta: dict) -> str | None:
    """What is wrong with the files of the artifact in `path` (None if they are as recorded)."""
    files = meta.get("files")
    if not isinstance(files, dict):
        return "meta.json has no file record (built by an older version)"
    for name, rec in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != rec.get("size"):
            return f"{name} has {f.stat().st_size} bytes, {rec.get('size')} recorded"
    stamp = (str(path), (path / "meta.json").stat().st_mtime_ns)
    if stamp not in _VERIFIED:
        for name, rec in files.items():
            if sha256(path / name) != rec.get("sha256"):
                return f"{name} does not match its recorded sha256"
        _VERIFIED.add(stamp)
    return None


def readable_checkpoint(path: Path) -> bool:
    """Whether `path` is a complete torch.save file (a zip archive whose CRCs all match)."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def discard_bad_checkpoints(stage: str, folder: Path) -> None:
    """Delete resume checkpoints under `folder` that cannot be read, with one warning each."""
    if not folder.is_dir():
        return
    for f in sorted([*folder.rglob("*.ckpt"), *folder.glob("round*.pt")]):
        if not readable_checkpoint(f):
            log.warning("%s: discarding the unreadable checkpoint %s; starting that loop afresh", stage, f)
            f.unlink()


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
    def _load(stage: str, key: str, path: Path) -> tuple[Artifact | None, str | None]:
        """The artifact in `path` if it is complete and intact; else (None, what is wrong), where
        nothing is wrong when it was never built."""
        meta = path / "meta.json"
        if not meta.is_file():
            return None, ("meta.json is missing" if path.exists() else None)
        try:
            record = json.loads(meta.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            return None, f"meta.json is unreadable ({e})"
        problem = damage(path, record)
        if problem:
            return None, problem
        return Artifact(stage, key, path, record, reused=True), None

    def get_or_build(self, stage: str, inputs: dict, build: Build) -> Artifact:
        key = self.key(inputs)
        final = self.root / stage / key
        found, problem = self._load(stage, key, final)
        if problem:
            log.warning("%s: the cached artifact %s is damaged (%s); rebuilding it", stage, final, problem)
        if found is None and global_rank() != 0:
            return self._build_private(stage, key, inputs, build, final)
        if found is None:
            with self._lock(stage, key):
                found, _ = self._load(stage, key, final)  # another job may have (re)built it meanwhile
                if found is None:
                    return self._build(stage, key, inputs, build, final)
        log.info("%s: reusing cached artifact %s", stage, final)
        return found

    def _build(self, stage: str, key: str, inputs: dict, build: Build, final: Path) -> Artifact:
        work = final.with_name(f"{key}.partial")
        ckpt = work / "ckpt"
        discard_bad_checkpoints(stage, work)
        if (ckpt / "last.ckpt").is_file():
            log.info("%s: resuming the interrupted build from %s", stage, ckpt)
        work.mkdir(parents=True, exist_ok=True)
        try:
            meta = self._run(stage, key, inputs, build, work, ckpt)
        except ConfigError:  # bad input: rerunning it would fail the same way, so keep nothing
            shutil.rmtree(work, ignore_errors=True)
            raise
        shutil.rmtree(ckpt, ignore_errors=True)
        meta["files"] = file_record(work)
        write_json(work / "meta.json", meta)  # last: its presence means the files are complete
        if final.exists():  # a damaged or incomplete artifact: replace it
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
        while (found := self._load(stage, key, final)[0]) is None:
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
    def scratch(self, stage: str, inputs: dict) -> Iterator[Path | None]:
        """A checkpoint folder for an uncached loop, kept if it fails, removed if it succeeds.

        Rerunning the same job resumes from it; identical jobs running at once take turns. On a
        cache that cannot be written it yields None: the loop runs without checkpoints.
        """
        key = self.key(inputs)
        ckpt = self.root / stage / f"{key}.partial" / "ckpt"
        if global_rank() != 0:
            yield ckpt
            return
        try:
            lock = self._lock(stage, key)
            lock.acquire()
        except OSError as e:  # a read-only (e.g. published) cache: run without checkpoints
            log.warning("%s: cannot write to the cache (%s: %s); running without resumable checkpoints",
                        stage, e.filename or self.root, e.strerror or e)
            yield None
            return
        try:
            discard_bad_checkpoints(stage, ckpt)
            if (ckpt / "last.ckpt").is_file():
                log.info("%s: resuming the interrupted run from %s", stage, ckpt)
            try:
                yield ckpt
            except ConfigError:
                shutil.rmtree(ckpt.parent, ignore_errors=True)
                raise
            shutil.rmtree(ckpt.parent, ignore_errors=True)
        finally:
            lock.release()
