"""The published code's checkpoints: import as weights plus mask, export ours in that layout.

The published code ("Unlearn-Sparse") prunes with `torch.nn.utils.prune`, so a pruned layer's
weight is stored as `<layer>.weight_orig` (values) and `<layer>.weight_mask` (0/1); the state
dict sits under `state_dict` in a `.pth.tar` (or is the top-level dict). Names are mapped by
these rules, and every key must map (strict):

- a leading `module.` (DataParallel) is dropped;
- `normalize.mean` / `normalize.std` (the published models normalise inside the net; ours in
  the loader) are checked against the data set's mean/std when given, then dropped;
- `.downsample.` (torchvision-style ResNet blocks) is our `.shortcut.`;
- the published head is `fc`; when ours has another name (resnet20s: `linear`) it maps to it;
- weight = weight_orig * weight_mask; masks must cover exactly our prunable weights.

Export writes `{"state_dict": ...}` with the reverse renames, `weight_orig` + `weight_mask`
(float 0/1, as torch.nn.utils.prune stores it) for every masked weight.

CLI for export: `python -m sparse_mu.pruning.export <prune artifact dir> <out.pth.tar>`.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sparse_mu.errors import ConfigError
from sparse_mu.pruning.mask import Mask, classifier_head, prunable_weights
from sparse_mu.pruning.pruners import Pruner, State

PUBLISHED_HEAD = "fc"
# (published, ours) name fragments
RENAMES = ((".downsample.", ".shortcut."),)


def _listed(keys) -> str:
    keys = sorted(keys)
    return f"{keys[:6]}{f' and {len(keys) - 6} more' if len(keys) > 6 else ''}"


def read_checkpoint(path: str | Path) -> State:
    """The tensors of a published-format file (its `state_dict`, `module.` dropped)."""
    if not str(path) or not Path(path).expanduser().is_file():
        raise ConfigError(f"pruner.path must name an existing checkpoint file; got {str(path)!r}")
    path = Path(path).expanduser()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ConfigError(
            f"{path}: cannot be read as tensors with torch.load(weights_only=True): {str(e).splitlines()[0]}. "
            "If you trust the file, keep only its weights: torch.save(torch.load(p, weights_only=False)"
            "['state_dict'], out)") from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise ConfigError(f"{path}: expected a dict of tensors (or one under 'state_dict'); got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _head_rename(net_keys, head: str) -> tuple[str, str] | None:
    """(published, ours) prefix of the head, when our head is not called `fc`."""
    if head == PUBLISHED_HEAD or any(k.startswith(f"{PUBLISHED_HEAD}.") for k in net_keys):
        return None
    return f"{PUBLISHED_HEAD}.", f"{head}."


def _to_ours(key: str, head: tuple[str, str] | None) -> str:
    for theirs, ours in RENAMES:
        key = key.replace(theirs, ours)
    if head and key.startswith(head[0]):
        key = head[1] + key[len(head[0]):]
    return key


def _to_published(key: str, head: str) -> str:
    for theirs, ours in RENAMES:
        key = key.replace(ours, theirs)
    if head != PUBLISHED_HEAD and key.startswith(f"{head}."):
        key = PUBLISHED_HEAD + key[len(head):]
    return key


def _check_normalize(sd: State, source: str, mean: list[float] | None, std: list[float] | None) -> None:
    for name, want in (("mean", mean), ("std", std)):
        got = sd.get(f"normalize.{name}")
        if got is None or want is None:
            continue
        want = [float(v) for v in want]
        if got.numel() != len(want) or not torch.allclose(got.flatten().float(), torch.tensor(want), atol=1e-4):
            raise ConfigError(
                f"{source} normalises inputs with {name} {[round(v, 4) for v in got.flatten().tolist()]}, "
                f"but dataset.{name} is {want}; set dataset.{name} to the checkpoint's values")


def import_state(sd: State, net: nn.Module, source: str, mean: list[float] | None = None,
                 std: list[float] | None = None) -> tuple[State, Mask]:
    """Map a published state dict onto `net`: (our state dict, our mask). See the module doc."""
    _check_normalize(sd, source, mean, std)
    sd = {k: v for k, v in sd.items() if not k.startswith("normalize.")}
    origs = {k.removesuffix("_orig"): v for k, v in sd.items() if k.endswith("_orig")}
    masks = {k.removesuffix("_mask"): v for k, v in sd.items() if k.endswith("_mask")}
    if not masks:
        raise ConfigError(f"{source} holds no pruning masks (<layer>.weight_orig + <layer>.weight_mask keys): "
                          "not a pruned checkpoint of the published code")
    if origs.keys() != masks.keys():
        raise ConfigError(f"{source}: missing mask keys for {_listed(k + '_mask' for k in origs.keys() - masks.keys())}"
                          f"; missing weight keys for {_listed(k + '_orig' for k in masks.keys() - origs.keys())}")
    bad = [k for k, m in masks.items() if not ((m == 0) | (m == 1)).all()]
    if bad:
        raise ConfigError(f"{source}: masks with values other than 0 and 1: {_listed(bad)}")
    plain = {k: v for k, v in sd.items() if not k.endswith(("_orig", "_mask"))}
    clash = plain.keys() & origs.keys()
    if clash:
        raise ConfigError(f"{source}: weights stored both plain and as weight_orig: {_listed(clash)}")
    ours = net.state_dict()
    head = _head_rename(ours, classifier_head(net))
    state = {_to_ours(k, head): v for k, v in plain.items()}
    state.update({_to_ours(k, head): origs[k] * masks[k].to(origs[k].dtype) for k in origs})
    mask = {_to_ours(k, head): m.bool() for k, m in masks.items()}
    unknown, missing = state.keys() - ours.keys(), ours.keys() - state.keys()
    if unknown or missing:
        raise ConfigError(f"{source} does not fit this architecture: keys the model lacks: {_listed(unknown)}; "
                          f"model keys the checkpoint lacks: {_listed(missing)}")
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in state.items() if v.shape != ours[k].shape]
    if wrong:
        raise ConfigError(f"{source} does not fit this architecture: shapes (checkpoint vs model) {wrong[:6]}")
    prunable = prunable_weights(net).keys()
    if mask.keys() != prunable:
        raise ConfigError(f"{source}: masks must cover exactly the prunable weights; no mask for "
                          f"{_listed(prunable - mask.keys())}; masks on weights sparse_mu does not prune: "
                          f"{_listed(mask.keys() - prunable)}")
    return {k: state[k].to(ours[k].dtype) for k in ours}, Mask({k: mask[k] for k in prunable})


def load_published(path: str | Path, net: nn.Module, mean: list[float] | None = None,
                   std: list[float] | None = None) -> tuple[State, Mask]:
    """A published-format checkpoint as (state dict for `net`, mask); ConfigError if it does not fit."""
    return import_state(read_checkpoint(path), net, str(path), mean, std)


def export_published(state: State, mask: Mask, path: str | Path, head: str = PUBLISHED_HEAD) -> None:
    """Write `state` and `mask` in the published layout; `head` is our classifier head's name."""
    out = {}
    for k, v in state.items():
        if k in mask.tensors:
            out[_to_published(k, head) + "_orig"] = v
            out[_to_published(k, head) + "_mask"] = mask.tensors[k].to(v.dtype)
        else:
            out[_to_published(k, head)] = v
    torch.save({"state_dict": out}, path)


@dataclass
class Checkpoint(Pruner):
    """A published-format checkpoint as the pruned model: its weights and mask, no training.

    `mean`/`std` (the data set's) are checked against the checkpoint's `normalize` layer.
    """

    path: str = ""
    mean: list[float] | None = None
    std: list[float] | None = None
    sparsity: float = field(init=False, default=0.0)

    needs_trained_base = False

    def __post_init__(self):
        self._sd = read_checkpoint(self.path)
        bad = [k for k, v in self._sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:  # caught now, not after a Retrain reference trained from it diverges
            raise ConfigError(f"pruner.path={self.path!r} holds NaN or infinite weights in {_listed(bad)}: "
                              "not a usable model")
        masks = [v for k, v in self._sd.items() if k.endswith("_mask")]
        total = sum(m.numel() for m in masks)
        self.sparsity = 1.0 - sum(int((m != 0).sum()) for m in masks) / total if total else 0.0

    def _import(self, net: nn.Module) -> tuple[State, Mask]:
        return import_state(self._sd, net, self.path, self.mean, self.std)

    def validate(self, net):
        self._import(net)

    def inputs(self):
        return {"checkpoint_sha256": hashlib.sha256(Path(self.path).expanduser().read_bytes()).hexdigest()}

    def prune(self, net, base, train):
        return self._import(net)
