"""Structured (filter / channel) pruning by the L1 norm of filters, and FLOPs counting.

Which channels must go together comes from Torch-Pruning's dependency graph
(`torch_pruning.DependencyGraph`): a group is a set of coupled output channels, e.g. a conv's
filters with its BatchNorm, or in a ResNet stage every conv whose output meets at a residual
addition. Removing root channel c of a group zeroes, in every conv / linear layer of the group,
the filter (weight row) that produces it, that layer's bias entry, and the affine weight and
bias of every BatchNorm of the group at that channel: the channel's output is then exactly zero
for every input, and a physically smaller network (the channel dropped, with the consumers'
input columns) computes the same function. The classifier head's outputs are never pruned.

The mask is the ordinary `Mask`: rows of the prunable weights plus, as extra keys, the biases
and BatchNorm affine parameters of the groups, so the `MaskEnforcer` keeps all of them zero
through every later training run.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sparse_mu.errors import check
from sparse_mu.pruning.mask import Mask, classifier_head, prunable_weights
from sparse_mu.pruning.pruners import OMP

log = logging.getLogger("sparse_mu")

_NORMS = (nn.modules.batchnorm._BatchNorm,)
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
# Leaf modules with parameters that channel bookkeeping understands; anything else (LayerNorm,
# attention, depthwise convolutions) makes the architecture unsupported.
_SUPPORTED = (*_LAYERS, *_NORMS)


@dataclass
class Entry:
    """Parameter `name`: root channel `root[i]` lives at index `index[i]` of its dim 0."""

    name: str
    root: torch.Tensor
    index: torch.Tensor


@dataclass
class Group:
    """One set of coupled output channels (`size` root channels) and the tensors they live in:
    `filters` (conv / linear weights, one row per channel) and `extras` (biases, BN affine)."""

    root: str
    size: int
    filters: list[Entry]
    extras: list[Entry]


def unsupported(net: nn.Module) -> list[str]:
    """Names of the modules with parameters that filter pruning cannot handle (empty: fine)."""
    out = []
    for name, m in net.named_modules():
        has_own = any(True for _ in m.parameters(recurse=False))
        if isinstance(m, nn.MultiheadAttention) or (has_own and not isinstance(m, _SUPPORTED)):
            out.append(f"{name or 'the model itself'} ({type(m).__name__})")
        elif isinstance(m, nn.modules.conv._ConvNd) and m.groups != 1:
            out.append(f"{name} (grouped {type(m).__name__})")
    return out


def _graph(net: nn.Module, input_shape: tuple[int, ...]) -> tuple[tp.DependencyGraph, list]:
    """The dependency graph of `net` (traced in place on CPU, every parameter made trainable) and
    its channel groups rooted at conv / linear layers, the head's outputs excluded; groups
    through a channel padding (the option-A shortcut of resnet20s & co.) are left out: their
    index mapping is not a plain one."""
    head = dict(net.named_modules()).get(classifier_head(net))
    ignored = [head] if head is not None else []
    for p in net.parameters():  # frozen layers (CF-k) would be missing from the autograd trace
        p.requires_grad_(True)
    with torch.enable_grad():  # the graph is traced through autograd, even when called under no_grad
        graph = tp.DependencyGraph().build_dependency(net, example_inputs=torch.zeros(1, *input_shape), verbose=False)
    groups = [g for g in graph.get_all_groups(ignored_layers=ignored, root_module_types=_LAYERS)
              if not any("Pad" in item.dep.target.name for item in g.items)]
    return graph, groups


def _entries(net: nn.Module, graph: tp.DependencyGraph, group) -> Group:
    names = {m: n for n, m in net.named_modules()}
    head = classifier_head(net)
    filters, extras, seen = [], [], set()
    for item in group.items:
        module = item.dep.target.module
        if not graph.is_out_channel_pruning_fn(item.dep.handler) or module not in names:
            continue
        name = names[module]
        if name in seen or not isinstance(module, _SUPPORTED):
            continue
        seen.add(name)
        check(name != head, "pruner", "a pruner that leaves the classifier's outputs alone", name)
        root = torch.tensor(item.root_idxs, dtype=torch.long)
        index = torch.tensor([int(i) for i in item.idxs], dtype=torch.long)
        if isinstance(module, _LAYERS):
            filters.append(Entry(f"{name}.weight", root, index))
            if module.bias is not None:
                extras.append(Entry(f"{name}.bias", root, index))
        elif module.affine:
            extras += [Entry(f"{name}.weight", root, index), Entry(f"{name}.bias", root, index)]
    root = group.items[0].dep.target.module
    return Group(names[root], len(group.items[0].idxs), filters, extras)


def channel_groups(net: nn.Module, input_shape: tuple[int, ...]) -> list[Group]:
    """The coupled output-channel groups of `net` (traced on a CPU copy; the names are `net`'s)."""
    scratch = copy.deepcopy(net).cpu().float().eval()
    graph, groups = _graph(scratch, input_shape)
    return [g for g in (_entries(scratch, graph, group) for group in groups) if g.filters]


def filter_l1(net: nn.Module, group: Group) -> torch.Tensor:
    """[group.size]: the L1 norm of each root channel's filters, summed over the group's layers."""
    params = dict(net.named_parameters())
    score = torch.zeros(group.size, dtype=torch.float64)
    for e in group.filters:
        rows = params[e.name].detach().cpu().double().abs().flatten(1).sum(1)
        score.index_add_(0, e.root, rows[e.index])
    return score


def _per_filter(group: Group, net: nn.Module) -> torch.Tensor:
    """[group.size]: the number of weights each root channel's filters hold (for global ranking)."""
    params = dict(net.named_parameters())
    count = torch.zeros(group.size, dtype=torch.float64)
    for e in group.filters:
        count.index_add_(0, e.root, torch.full((len(e.root),), float(params[e.name][0].numel()), dtype=torch.float64))
    return count


def _rows(group: Group) -> torch.Tensor:
    """[group.size]: how many filters (conv / linear output channels) each root channel has."""
    rows = torch.zeros(group.size, dtype=torch.long)
    for e in group.filters:
        rows.index_add_(0, e.root, torch.ones(len(e.root), dtype=torch.long))
    return rows


def select(net: nn.Module, groups: list[Group], sparsity: float, layerwise: bool) -> list[torch.Tensor]:
    """The root channels to remove from each group: the lowest filter L1 norms (ties by position).

    Layerwise: round(sparsity * size) of every group. Global: channels of all groups ranked by
    the mean |w| of their filters (L1 / weights, so layers of different fan-in compare), removed
    until round(sparsity * all filters) filters are gone. Every group keeps at least one channel.
    """
    scores = [filter_l1(net, g) for g in groups]
    if layerwise:
        out = []
        for g, s in zip(groups, scores, strict=True):
            n = min(round(sparsity * g.size), g.size - 1)
            out.append(torch.sort(torch.argsort(s, stable=True)[:n]).values)
        return out
    rows = [_rows(g) for g in groups]
    flat = torch.cat([s / _per_filter(g, net) for g, s in zip(groups, scores, strict=True)])
    owner = torch.cat([torch.full((g.size,), i) for i, g in enumerate(groups)])
    local = torch.cat([torch.arange(g.size) for g in groups])
    target = round(sparsity * int(sum(r.sum() for r in rows)))
    left, removed, chosen = [g.size for g in groups], 0, [[] for _ in groups]
    for j in torch.argsort(flat, stable=True).tolist():
        i, c = int(owner[j]), int(local[j])
        cost = int(rows[i][c])
        if left[i] == 1 or removed + cost > target:
            continue
        chosen[i].append(c)
        left[i] -= 1
        removed += cost
        if removed == target:
            break
    return [torch.tensor(sorted(c), dtype=torch.long) for c in chosen]


def channel_mask(net: nn.Module, groups: list[Group], removed: list[torch.Tensor]) -> Mask:
    """Ones on every prunable weight and group tensor; zeros on the removed channels' entries."""
    params = dict(net.named_parameters())
    tensors = {k: torch.ones_like(w, dtype=torch.bool, device="cpu") for k, w in prunable_weights(net).items()}
    for g in groups:
        for e in (*g.filters, *g.extras):
            tensors.setdefault(e.name, torch.ones_like(params[e.name], dtype=torch.bool, device="cpu"))
    for g, gone in zip(groups, removed, strict=True):
        drop = torch.zeros(g.size, dtype=torch.bool)
        drop[gone] = True
        for e in (*g.filters, *g.extras):
            tensors[e.name][e.index[drop[e.root]]] = False
    return Mask(tensors)


def channel_sparsity(net: nn.Module) -> float:
    """Fraction of the output channels (rows) of the prunable weights that are entirely zero,
    counted from the weights themselves."""
    rows = [w.detach().flatten(1) if w.dim() > 1 else w.detach()[:, None] for w in prunable_weights(net).values()]
    total = sum(r.shape[0] for r in rows)
    return sum(int((r == 0).all(1).sum()) for r in rows) / max(total, 1)


def flops(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of one image, as `torch.utils.flop_counter` counts them (2 per
    multiply-add of convolutions and matrix products; norms, activations and pooling are free)."""
    scratch = copy.deepcopy(net).cpu().float().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        scratch(torch.zeros(1, *input_shape))
    return int(counter.get_total_flops())


def shrunk(net: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """A CPU copy of `net` with every dead channel physically removed: a group's root channel
    whose filters, biases and BN affine entries are all zero (so it outputs zero), with the
    consumers' input columns. A group keeps at least one channel."""
    scratch = copy.deepcopy(net).cpu().float().eval()
    graph, groups = _graph(scratch, input_shape)
    params = dict(scratch.named_parameters())
    dead_sets = []
    for group in groups:
        g = _entries(scratch, graph, group)
        if not g.filters:
            continue
        alive = torch.zeros(g.size, dtype=torch.long)
        for e in (*g.filters, *g.extras):
            p = params[e.name].detach()
            nonzero = (p.flatten(1) != 0).any(1) if p.dim() > 1 else p != 0
            alive.index_add_(0, e.root, nonzero[e.index].long())
        dead = (alive == 0).nonzero().flatten().tolist()
        if dead and len(dead) < g.size:
            dead_sets.append((group.items[0].dep, dead))
    for dep, dead in dead_sets:  # every group found before any is pruned
        graph.get_pruning_group(dep.target.module, dep.handler, dead).prune()
    return scratch


def flops_report(net: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """`flops` (dead channels removed; dense FLOPs where filter pruning does not apply),
    `flops_dense`, `flops_percent` (flops / flops_dense) and `channel_sparsity` (percent) of `net`."""
    dense = flops(net, input_shape)
    small = flops(shrunk(net, input_shape), input_shape) if not unsupported(net) else dense
    return {"flops": small, "flops_dense": dense, "flops_percent": 100.0 * small / dense if dense else 100.0,
            "channel_sparsity": 100.0 * channel_sparsity(net)}


@dataclass
class FilterL1(OMP):
    """Structured pruning: remove the output channels whose filters have the smallest L1 norm
    from the trained model (`sparsity`: the fraction of channels; per layer, or globally by the
    filters' mean |w|), rewind as OMP (`rewind`), retrain with the channel mask."""

    sparsity: float = 0.5
    layerwise: bool = True

    def validate(self, net: nn.Module) -> None:
        bad = unsupported(net)
        check(not bad, "arch", "a network of convolutions, linear layers and BatchNorm for pruner=filter_l1 "
              "(e.g. small_cnn, lenet, mlp, resnet18, vgg16_bn)", ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else ""))
        shape = getattr(net, "input_shape", None)  # set by the pipeline; the graph is traced on it
        check(shape is None or bool(channel_groups(net, shape)), "arch", "a network with prunable channels for "
              "pruner=filter_l1 (a conv or linear layer besides the classifier)", type(net).__name__)

    def prune(self, net, base, train):
        net.load_state_dict(base.final)
        groups = channel_groups(net, net.input_shape)
        removed = select(net, groups, self.sparsity, self.layerwise)
        mask = channel_mask(net, groups, removed)
        log.info("pruner filter_l1: %d of %d channels removed in %d groups", sum(len(r) for r in removed),
                 sum(g.size for g in groups), len(groups))
        return train(self.start_weights(base, base.final), mask), mask
