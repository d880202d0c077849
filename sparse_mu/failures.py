"""How a run fails: one line for bad input and file-system faults, and no finished result lost.

`one_line(e)` is the message for an error that is the user's or the machine's (a `ConfigError`,
or an `OSError` on a path: read-only, no permission, disk full) rather than a bug; `record`
writes it (with the traceback for anything else) into the run's `FAILED` file; `save_results`
writes metrics.json and, when that fails, keeps the metrics in a temporary file and says where.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sparse_mu.cache import write_json
from sparse_mu.errors import ConfigError

log = logging.getLogger("sparse_mu")

_HINTS = {
    errno.EROFS: "the file system is read-only; point paths.cache_dir / hydra.run.dir at a writable folder",
    errno.EACCES: "no permission; point paths.cache_dir / hydra.run.dir at a writable folder",
    errno.EPERM: "no permission; point paths.cache_dir / hydra.run.dir at a writable folder",
    errno.ENOSPC: "the disk is full; free space or point paths.cache_dir / hydra.run.dir elsewhere",
    errno.EDQUOT: "the disk quota is exhausted; free space or point the paths elsewhere",
}


def one_line(e: BaseException) -> str | None:
    """The one-line message for bad input or a file-system fault; None for anything else."""
    if isinstance(e, ConfigError):
        return str(e)
    if isinstance(e, OSError) and (e.filename is not None or e.errno in _HINTS):
        what = e.strerror or (e.args[0] if e.args else type(e).__name__)
        hint = _HINTS.get(e.errno)
        return f"{e.filename or 'a file'}: {what}" + (f" ({hint})" if hint else "")
    return None


def record(e: BaseException, out_dir: Path) -> str | None:
    """Write `FAILED` into `out_dir`: the one-line message, or a line and the traceback for a
    bug. Returns the one-line message (None for a bug). A FAILED that cannot be written is
    logged, not raised."""
    message = one_line(e)
    text = f"error: {message}\n" if message else f"error: {type(e).__name__}: {e}\n\n{traceback.format_exc()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "FAILED").write_text(text)
    except OSError as fault:
        log.error("error: cannot write %s (%s)", out_dir / "FAILED", fault.strerror or fault)
    return message


def save_results(path: Path, metrics: dict) -> Path:
    """Write `metrics` to `path`; if that fails, to a temporary file (or, failing that, into the
    log), then raise an OSError naming `path` and where the metrics are. Returns the path written."""
    try:
        write_json(path, metrics)
        return path
    except OSError as e:
        fault = e
    fallback = Path(tempfile.gettempdir()) / f"sparse_mu-metrics-{time.strftime('%Y%m%d-%H%M%S')}-{id(metrics):x}.json"
    try:
        write_json(fallback, metrics)
        where = f"saved in {fallback} instead"
    except OSError:
        log.error("metrics: %s", json.dumps(metrics, default=str))
        where = "printed in the log above (the line starting with 'metrics:')"
    raise OSError(fault.errno, f"{fault.strerror or fault}; the finished run's metrics are {where}", str(path)) from fault


def writable(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (None if they can), trying it in the nearest
    existing folder above it so nothing is left behind."""
    parent = folder.expanduser().absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        tempfile.TemporaryDirectory(dir=parent).cleanup()
    except OSError as e:
        return f"{parent}: {e.strerror or e}"
    return None


class CheckOutputDir(Callback):
    """A Hydra callback: a run or sweep directory that cannot be created is one line and exit 1,
    before Hydra fails on it with a traceback."""

    def _check(self, folder: str, setting: str) -> None:
        problem = writable(Path(folder))
        if problem:
            print(f"error: cannot create the output directory {folder} ({problem}); set {setting} "
                  "or paths.output_dir to a writable folder", file=sys.stderr)
            sys.exit(1)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")
