"""Applications: work a run does on top of the stages (transfer learning, un-pruning, ...).

Each is one unit registered with `@application`; `pipeline.run` calls every enabled one at the
same three points and never names them:
- `setup(job)` checks the application's settings before anything trains (bad input fails early);
- `identity(cfg)` adds the settings that make this run a different experiment (`config_hash`);
- `metrics(done)` returns the application's entries of metrics.json from the finished run
  (`Done`); an `artifacts` entry is merged into the record's `artifacts`.
Adding one is a class here or in its own module (imported by `enabled` below), with its
config node in run.yaml or a group of its own; the pipeline's driver does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig
from torch import nn

if TYPE_CHECKING:
    from sparse_mu.cache import Artifact
    from sparse_mu.job import Job, State
    from sparse_mu.pruning import BaseWeights, Mask


@dataclass
class Done:
    """What an application sees once the unlearning run is over."""

    job: Job
    base_art: Artifact           # the dense base model's cache entry
    base: BaseWeights            # its init / rewind / trained weights
    state: State                 # the pruned model's weights (the unlearner's start)
    mask: Mask | None            # its mask (None when dense)
    pruned_key: str              # the pruned model's cache key
    reference: Artifact | None   # the Retrain reference (None when eval.retrain_reference=false)
    net: nn.Module               # the unlearned model
    seconds: float               # the unlearner's RTE


class Application:
    """Base class: enabled when `cfg[name]` is set and not `enabled: false`."""

    name: str = ""

    def enabled(self, cfg: DictConfig) -> bool:
        node = cfg.get(self.name)
        return bool(node) and bool(node.get("enabled", True))

    def setup(self, job: Job) -> None:
        """Check settings (and prepare what later steps need) before any training."""

    def identity(self, cfg: DictConfig) -> dict[str, Any]:
        from sparse_mu.job import _plain
        return {self.name: _plain(cfg[self.name])}

    def metrics(self, done: Done) -> dict:
        raise NotImplementedError


REGISTRY: dict[str, Application] = {}


def application(cls: type[Application]) -> type[Application]:
    """Class decorator: register one instance of `cls` under `cls.name`."""
    assert cls.name and cls.name not in REGISTRY, f"application name {cls.name!r} missing or taken"
    REGISTRY[cls.name] = cls()
    return cls


def enabled(cfg: DictConfig) -> list[Application]:
    """The applications this run does, in registration order."""
    import sparse_mu.applications  # noqa: F401  (registers the built-in ones)
    import sparse_mu.evaluation  # noqa: F401  (per-example tests, docs/evaluation.md)
    import sparse_mu.sequential  # noqa: F401
    return [app for app in REGISTRY.values() if app.enabled(cfg)]
