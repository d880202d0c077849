"""Config nodes to objects."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate


def build(node: Any, /, **runtime: Any) -> Any:
    """Instantiate a `_target_` node, passing runtime objects (net, data, mask) directly.

    Hydra would merge keyword arguments into the config first, turning dataclass objects into
    DictConfigs and wrapping the target's own errors; instantiating a partial and calling it
    keeps both intact, so a `ConfigError` reaches the user as is.
    """
    return instantiate(node, _partial_=True, _convert_="all")(**runtime)
