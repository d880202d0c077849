"""Every setting's type (and, for the untargeted ones, range), checked before anything trains.

A config node with a `_target_` is checked against the target's own signature: its keys must be
parameters of the target's `__init__` (following `**kwargs` up the class hierarchy, e.g. an
unlearner's `**loop` to `TrainLoop`), and each value must match the parameter's type hint. The
nodes without a target (`seed`, `eval.*`, `fast.*`, `paths.*`, `unprune.*`, ...) are declared in
`Run` below: types and ranges only, the defaults stay in `sparse_mu/conf/run.yaml`. Value ranges that
depend on the component are checked by the components themselves, in `pipeline.setup`.

A value taken by interpolation (`train.epochs: ${dataset.epochs}`) is reported under the setting
it came from, which is the one the user typed.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import inspect
import logging
import netrc
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from sparse_mu.errors import ConfigError
from sparse_mu.metrics.mia import FEATURES
from sparse_mu.tune import OBJECTIVES

log = logging.getLogger("sparse_mu")


@dataclass(frozen=True)
class Range:
    """Bounds of a number (inclusive), for `Annotated[int, Range(0)]`."""

    low: float | None = None
    high: float | None = None

    def holds(self, v: float) -> bool:
        return (self.low is None or v >= self.low) and (self.high is None or v <= self.high)

    def text(self) -> str:
        if self.high is None:
            return f">= {self.low}"
        return f"in [{self.low}, {self.high}]" if self.low is not None else f"<= {self.high}"


MiaFeature = Literal[FEATURES]  # type: ignore[valid-type]


@dataclass
class Fast:
    channels_last: bool | Literal["auto"]
    compile: bool


@dataclass
class Damage:
    ra_drop: Annotated[float, Range(0)]
    loss_ratio: Annotated[float, Range(1)]


@dataclass
class Eval:
    retrain_reference: bool
    batch_size: Annotated[int, Range(1)] | None
    mia_features: list[MiaFeature]
    mia_privacy: bool
    references: Annotated[int, Range(1)]
    unlearn_seeds: Annotated[int, Range(1)]
    per_example: bool | None
    retain_sample: Annotated[int, Range(1)]
    damage: Damage


@dataclass
class Tune:
    objective: Literal[OBJECTIVES] | None  # type: ignore[valid-type]
    ra_margin: Annotated[float, Range(0)]


@dataclass
class Unprune:
    enabled: bool
    finetune_epochs: Annotated[int, Range(1)] | None


@dataclass
class Paths:
    data_dir: str
    cache_dir: str
    output_dir: str


@dataclass
class Transfer:
    dataset: Any  # targeted nodes: checked against their targets
    probe: Any


@dataclass
class Run:
    """The settings of sparse_mu/conf/run.yaml that no component takes (the defaults live there)."""

    seed: Annotated[int, Range(0, 2**32 - 1)]
    unlearn_seed: Annotated[int, Range(0, 2**32 - 1)] | None
    gpu_per_job: bool
    checkpoint_every: Annotated[int, Range(0)]
    fast: Fast
    eval: Eval
    tune: Tune
    unprune: Unprune
    paths: Paths
    transfer: Transfer | None
    logger: dict[str, Any] | None  # name -> a targeted node (or null to drop it)
    callbacks: dict[str, Any] | None
    dataset: Any
    arch: Any
    train: Any
    pruner: Any
    unlearner: Any
    reference: Any
    forget: Any
    trainer: Any


# Values a target's signature does not take but the pipeline resolves before the target sees them.
EXTRA_ALLOWED = {"trainer.precision": ("auto",)}
# Parameters the pipeline passes at run time: never settings.
RUNTIME = {"self", "net", "task", "data", "indices", "features", "labels", "num_classes", "in_channels",
           "image_size", "node", "record", "max_epochs", "callbacks", "save_dir", "config", "tags"}


def _hints(fn: Any) -> dict[str, Any]:
    """Type hints of `fn`, each one evaluated on its own so one unresolvable hint spoils nothing."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # e.g. a forward reference to a class imported only for type checkers
        pass
    raw = getattr(inspect.unwrap(fn), "__annotations__", {})
    module = getattr(inspect.unwrap(fn), "__globals__", {})
    out = {}
    for name, hint in raw.items():
        try:
            out[name] = eval(hint, module) if isinstance(hint, str) else hint  # noqa: S307 (annotations)
        except Exception:
            out[name] = Any
    return out


def parameters(target: Any) -> tuple[dict[str, Any], bool]:
    """The settings `target` takes, with their type hints, and whether it takes any keyword too
    (`**kwargs` that no base class's `__init__` resolves)."""
    if dataclasses.is_dataclass(target):
        hints = _hints(target)
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(target) if f.init}, False
    fns = [c.__dict__["__init__"] for c in target.__mro__ if "__init__" in c.__dict__ and c is not object] \
        if inspect.isclass(target) else [target]
    params: dict[str, Any] = {}
    for fn in fns:
        hints, open_kw = _hints(fn), False
        for p in inspect.signature(fn).parameters.values():
            if p.kind == p.VAR_KEYWORD:
                open_kw = True
            elif p.kind != p.VAR_POSITIONAL:
                params.setdefault(p.name, hints.get(p.name, Any))
        if not open_kw:
            return params, False
    return params, True


def conforms(value: Any, hint: Any) -> bool:
    """Whether a config value (plain Python: dict, list, str, numbers, bool, None) fits `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, (typing.TypeVar, typing.ForwardRef, str)):
        return True
    if origin is Annotated:
        ranges = [a for a in args[1:] if isinstance(a, Range)]
        return conforms(value, args[0]) and all(r.holds(value) for r in ranges)
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (Path, os.PathLike):
        return isinstance(value, str)
    if origin in (list, tuple, cabc.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(conforms(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(conforms(v, args[0]) for v in value)
    if origin in (dict, cabc.Mapping) or hint is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a typing construct we do not model: the component checks it


def describe(hint: Any) -> str:
    """`hint` in words, for the message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        ranges = " and ".join(a.text() for a in args[1:] if isinstance(a, Range))
        return f"{describe(args[0])} {ranges}".strip()
    if origin in (Union, types.UnionType):
        if any(typing.get_origin(a) is Literal for a in args):  # "one of auto, true, false"
            spelled = {bool: (True, False), type(None): (None,)}
            args = (Literal[tuple(v for a in args for v in typing.get_args(a) or spelled.get(a, ()))],
                    *(a for a in args if typing.get_origin(a) is not Literal and a not in spelled))
        words = list(dict.fromkeys(describe(a) for a in args))
        return " or ".join([w for w in words if w != "null"] + ["null"] * ("null" in words))
    if origin is Literal:
        return "one of " + ", ".join(dict.fromkeys(_word(a) for a in args))
    if origin in (list, tuple, cabc.Sequence) or hint in (list, tuple):
        return f"a list of {_plural(describe(args[0]))}" if args and args[0] is not Ellipsis else "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
             None: "null", Path: "a path", dict: "a mapping"}
    if hint in names:
        return names[hint]
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _word(value: Any) -> str:
    """A value as YAML spells it."""
    return ("true" if value else "false") if isinstance(value, bool) else "null" if value is None else str(value)


def _plural(word: str) -> str:
    if word.startswith("one of"):
        return "values, each " + word
    for one, many in (("an integer", "integers"), ("a number", "numbers"), ("a string", "strings"),
                      ("true or false", "booleans")):
        word = word.replace(one, many)
    return word


def _source(node: DictConfig, key: str, path: str) -> str:
    """The setting a value came from: `path`, or the one a plain `${...}` interpolation names."""
    seen = {path}
    while True:
        child = node._get_node(key)
        text = child._value() if child is not None else None
        if not (isinstance(text, str) and text.startswith("${") and text.endswith("}")
                and text.count("${") == 1 and ":" not in text):
            return path
        ref = text[2:-1]
        if ref.startswith("."):
            return path
        parent, _, key = ref.rpartition(".")
        root = node._get_root()
        node = OmegaConf.select(root, parent) if parent else root
        if not isinstance(node, DictConfig) or ref in seen:
            return path
        path = ref
        seen.add(path)


def _value(node: DictConfig, key: str, path: str) -> Any:
    try:
        value = node[key]
    except MissingMandatoryValue:
        raise ConfigError(f"{path} must be set (it has no default): add {path}=...; got ???") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path} cannot be resolved: {str(e).splitlines()[0]}") from None
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _check_node(node: DictConfig, path: str, params: dict[str, Any], open_kw: bool, what: str) -> None:
    # plain values first: `seed=abc` is reported as seed, not as forget.seed (${seed})
    for key in sorted(node, key=lambda k: isinstance(node._get_node(k), DictConfig)):
        if key == "_target_" or (key.startswith("_") and key.endswith("_")):
            continue
        full = f"{path}.{key}" if path else str(key)
        if key not in params:
            if open_kw:
                continue
            allowed = ", ".join(sorted(k for k in params if k not in RUNTIME))
            raise ConfigError(f"{full} is not a setting of {what}; allowed: {allowed}; got {full}={node._get_node(key)._value()!r}")
        child, hint = node._get_node(key), params[key]
        if isinstance(child, DictConfig) and not child._is_none():
            schema = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), None)
            if "_target_" not in child and schema is not None:
                _check_node(child, full, _dataclass_params(schema), False, full)
                continue
            if "_target_" in child or conforms({}, hint):
                validate_node(child, full)
                continue
        value = _value(node, key, full)
        if not conforms(value, hint) and value not in EXTRA_ALLOWED.get(full, ()):
            source = _source(node, key, full)
            via = f" (used as {full})" if source != full else ""
            extra = "".join(f" or {_word(v)}" for v in EXTRA_ALLOWED.get(full, ()))
            raise ConfigError(f"{source}{via} must be {describe(hint)}{extra}; got {value!r}")


def _dataclass_params(cls: type) -> dict[str, Any]:
    hints = _hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def validate_node(node: DictConfig | None, path: str) -> None:
    """Check one node (and the nodes under it) against its `_target_`; a node without one that
    holds named targeted nodes (`logger`, `callbacks`) has each checked."""
    if node is None:
        return
    if "_target_" not in node:
        for key in node:
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                validate_node(child, f"{path}.{key}")
        return
    name = node._get_node("_target_")._value()
    try:
        target = get_object(name)
    except Exception as e:
        raise ConfigError(f"{path}._target_ must name an importable class or function; got {name!r} ({e})") from None
    params, open_kw = parameters(target)
    _check_node(node, path, params, open_kw, f"{path} ({name})")


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first setting of `cfg` with an unknown key or a wrong type."""
    _check_node(cfg, "", _dataclass_params(Run), False, "the run (sparse_mu/conf/run.yaml)")
    wandb_credentials(cfg)


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_credentials(cfg: DictConfig) -> None:
    """An online W&B logger without credentials (no WANDB_API_KEY, no ~/.netrc entry) logs
    offline instead, with one warning, rather than failing after the training."""
    node = (cfg.get("logger") or {}).get("wandb")
    if not node or node.get("offline", True) or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return
    if _has_wandb_key():
        return
    log.warning("logger.wandb.offline=false but no W&B credentials were found (WANDB_API_KEY or a ~/.netrc "
                "entry): logging offline instead; run `wandb login`, then `wandb sync` the run's wandb/ folder")
    with open_dict(cfg):
        node.offline = True
