"""The whole FF and IU updates against per-sample loops, on CPU-sized models and inputs.

    OMP_NUM_THREADS=1 python benchmarks/per_sample_grads.py [--retain 256 --forget 32 --repeats 3]

Per case (model x input shape) and method, the same update four ways, after checking that ours
gives the batch-1 loop's result (largest difference / largest value, per tensor, printed; the
old vmap path's for comparison; the run stops above 1e-4):
  ours            the unlearner as the pipeline runs it (`FisherForgetting` / `InfluenceUnlearning`
                  at their defaults, one Lightning fit, the update applied)
  batch-1 loop    the strongest simple baseline: one forward and one backward pass per sample
                  (FF: accumulate (g_i + 1e-8)^2; IU: the WoodFisher recursion on the gradient
                  vectors, g_f and g_r by the same `summed_grad` call as ours), then the update
  vmap (before)   FF only: the per-sample gradients of `per_sample.per_sample_grads` (vmap over
                  grad, the chunk from memory_mb), what `ff` ran before
  published loop  FF only: the published `fisher_information_martix`: one forward pass over a
                  batch of 256, one `autograd.grad(..., retain_graph=True)` per sample; timed on
                  `--published-samples` samples of the batch and scaled per sample (it costs
                  seconds per sample). IU has no such arm.

Every arm gets the same net, channels-last by default (`--layout`; the pipeline's
`fast.channels_last: auto`). Model in eval mode, a 95 % magnitude mask, random images and labels, `--retain` retain and
`--forget` forget samples (IU's m = min(1000, retain)). Arms interleave, `--repeats` times;
medians count. One line `speedup_vs_batch1_loop=<x>` per case and method (batch-1 loop time /
ours). `--calibrate` times FF's statistic per chunk size instead (how the CPU chunk was chosen).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparse_mu.data import Augment, ForgetSet, ImageData  # noqa: E402
from sparse_mu.models import LeNet, SmallCNN  # noqa: E402
from sparse_mu.models.resnet_s import resnet20s  # noqa: E402
from sparse_mu.pruning import BaseWeights, Mask, classifier_head  # noqa: E402
from sparse_mu.pruning.pruners import magnitude_scores  # noqa: E402
from sparse_mu.unlearn import FisherForgetting, InfluenceUnlearning, UnlearnTask  # noqa: E402
from sparse_mu.unlearn.layer_grads import grad_square_sums  # noqa: E402
from sparse_mu.unlearn.per_sample import (  # noqa: E402
    CPU_CHUNK,
    chunk_size_for,
    keep_masks,
    log_likelihood,
    per_sample_grads,
    summed_grad,
)

EPS = 1e-8
ARCHS = {"small_cnn": SmallCNN, "lenet": LeNet, "resnet20s": resnet20s}
CASES = ["small_cnn:1x8x8", "resnet20s:1x8x8", "small_cnn:3x32x32", "lenet:3x32x32", "resnet20s:3x32x32"]


def make_case(arch: str, shape: tuple[int, int, int], n_r: int, n_f: int, channels_last: bool = True):
    torch.manual_seed(0)
    net = ARCHS[arch](10, shape[0], shape[1])
    if channels_last:  # as the pipeline hands nets over (`fast.channels_last: auto`)
        net = net.to(memory_format=torch.channels_last)
    net.train()
    with torch.no_grad():
        net(torch.randn(64, *shape))  # BatchNorm running statistics
    net.eval()
    n = n_r + n_f
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8)
    y = torch.randint(0, 10, (n,))
    empty = torch.zeros(0, dtype=torch.long)
    data = ImageData("random", x, y, torch.arange(n), empty, empty, [str(c) for c in range(10)],
                     torch.full((shape[0],), 0.5), torch.full((shape[0],), 0.25), Augment(), "random")
    mask = Mask.from_scores(magnitude_scores(net), 0.95)
    mask.apply_(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    task = UnlearnTask(data, ForgetSet("random", torch.arange(n_f), torch.arange(n_f, n)), mask,
                       BaseWeights(state, state, state))
    return net, task


def batch_of(task: UnlearnTask, idx: torch.Tensor):
    x, y, _ = next(iter(task.data.loader(idx, batch_size=len(idx), train=False)))
    return x, y


def fit(module) -> None:
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, accelerator="cpu").fit(module)


def masked(grads, names, keep):
    return [g * keep[k] if k in keep else g for k, g in zip(names, grads, strict=True)]


def ff_noise(net, stats, count, keep, alpha=1e-6, seed=0) -> None:
    """FF's update (as `FisherForgetting.on_train_epoch_end`)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in net.named_parameters():
            std = (alpha / (stats[k] / count)).sqrt().clamp(max=1e-3)
            std = std * 10 if k == f"{classifier_head(net)}.bias" else std
            new = p + std * torch.randn(p.shape, generator=gen)
            p.copy_(new * keep[k] if k in keep else new)


def ff_ours(net, task):
    module = FisherForgetting(copy.deepcopy(net), task)
    fit(module)
    return module.stats


def ff_batch1(net, task):
    x, y = batch_of(task, task.forget.retain)
    keep, names = keep_masks(net, task.mask), [k for k, _ in net.named_parameters()]
    stats = {k: torch.zeros_like(p) for k, p in net.named_parameters()}
    for i in range(len(x)):
        log_p = torch.log_softmax(net(x[i:i + 1]), -1)[0, y[i]]
        for k, g in zip(names, masked(torch.autograd.grad(log_p, list(net.parameters())), names, keep), strict=True):
            stats[k] += (g + EPS).pow(2)
    ff_noise(copy.deepcopy(net), stats, len(x), keep)
    return stats


def ff_vmap(net, task):
    x, y = batch_of(task, task.forget.retain)
    keep, stats = keep_masks(net, task.mask), {}
    for grads in per_sample_grads(net, x, y, chunk_size=chunk_size_for(net, 1024), loss=log_likelihood, keep=keep):
        for k, g in grads.items():
            stats[k] = stats.get(k, 0) + (g + EPS).pow(2).sum(0)
    ff_noise(copy.deepcopy(net), stats, len(x), keep)
    return stats


def ff_published(net, task, samples: int):
    x, y = batch_of(task, task.forget.retain[:256])
    log_p = torch.log_softmax(net(x), dim=-1)
    for i in range(samples):
        torch.autograd.grad(log_p[i, y[i]], list(net.parameters()), retain_graph=True)


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def iu_ours(net, task):
    module = InfluenceUnlearning(copy.deepcopy(net), task)
    fit(module)
    return torch.cat([(a - b).flatten() for a, b in zip(module.net.parameters(), net.parameters(), strict=True)])


def iu_batch1(net, task, alpha=10.0, samples=1000):
    keep, names, params = keep_masks(net, task.mask), [k for k, _ in net.named_parameters()], list(net.parameters())

    def summed(idx):  # as ours: `per_sample.summed_grad` over batches of 256, in chunks of CPU_CHUNK
        total = 0
        for start in range(0, len(idx), 256):
            x, y = batch_of(task, idx[start:start + 256])
            total = total + flat(summed_grad(net, x, y, keep, chunk_size=CPU_CHUNK).values())
        return total

    n_f, n_r = len(task.forget.forget), len(task.forget.retain)
    v = summed(task.forget.forget) / (n_f + n_r) - n_f / ((n_f + n_r) * n_r) * summed(task.forget.retain)
    picked = InfluenceUnlearning(net, task).recursion_samples()
    x, y = batch_of(task, picked)
    k, o, m = v.clone(), None, len(picked)
    for i in range(m):
        g = flat(masked(torch.autograd.grad(F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]), params), names, keep))
        if o is None:
            o = g.clone()
            continue
        t = o @ g
        k -= (k @ g) / (m + t) * o
        o -= t / (m + t) * o
    return alpha * k  # the update; applying it is one add


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def difference(got, want) -> float:
    """Largest |got - want| / largest |want|, per tensor (float32 rounding: about 1e-6)."""
    if isinstance(want, dict):
        return max(difference(got[k], want[k]) for k in want)
    return ((got - want).abs().max() / want.abs().max()).item()


def run_case(name: str, args) -> None:
    arch, dims = name.split(":")
    shape = tuple(int(d) for d in dims.split("x"))
    net, task = make_case(arch, shape, args.retain, args.forget, args.layout == "channels_last")
    n_params = sum(p.numel() for p in net.parameters())
    arms = {
        "ff": {"ours": lambda: ff_ours(net, task), "batch-1 loop": lambda: ff_batch1(net, task),
               "vmap (before)": lambda: ff_vmap(net, task),
               "published loop": lambda: ff_published(net, task, args.published_samples)},
        "iu": {"ours": lambda: iu_ours(net, task), "batch-1 loop": lambda: iu_batch1(net, task)},
    }
    for method, ways in arms.items():
        times = {w: [] for w in ways}
        results = {w: fn() for w, fn in ways.items()}  # warm-up: torch.func's and Lightning's first calls
        for _ in range(args.repeats):
            for w, fn in ways.items():
                t, results[w] = timed(fn)
                times[w].append(t)
        want = results["batch-1 loop"]
        diff = {w: difference(results[w], want) for w in ("ours", "vmap (before)") if w in results}
        assert diff["ours"] < 1e-4, f"{name} {method}: ours differs from the batch-1 loop by {diff['ours']:.2e}"
        med = {w: statistics.median(t) for w, t in times.items()}
        if "published loop" in med:  # timed on a few samples: per sample, scaled to the retain set
            med["published loop"] *= args.retain / args.published_samples
        print(f"{name} {arch} ({n_params} parameters) {method}: "
              + ", ".join(f"{w} {t:.3f} s" for w, t in med.items())
              + "; difference from the batch-1 loop: "
              + ", ".join(f"{w} {d:.1e}" for w, d in diff.items()))
        for w in med:
            if w not in ("ours", "batch-1 loop"):
                print(f"  {name} {method} speedup_vs_{w.split()[0].replace('-', '')}={med[w] / med['ours']:.2f}")
        print(f"{name} {method} speedup_vs_batch1_loop={med['batch-1 loop'] / med['ours']:.2f}", flush=True)


def calibrate(cases: list[str], args) -> None:
    """FF's statistic (`grad_square_sums`) per chunk size: how `per_sample.CPU_CHUNK` was chosen."""
    chunks = (8, 16, 32, 64, 256)
    for name in cases:
        arch, dims = name.split(":")
        net, task = make_case(arch, tuple(int(d) for d in dims.split("x")), args.retain, args.forget,
                              args.layout == "channels_last")
        x, y = batch_of(task, task.forget.retain)
        times = {c: [] for c in chunks}
        for c in chunks:
            grad_square_sums(net, x, y, chunk_size=c)
        for _ in range(args.repeats):
            for c in chunks:
                times[c].append(timed(lambda c=c, net=net, x=x, y=y: grad_square_sums(net, x, y, chunk_size=c))[0])
        print(f"{name} FF statistic, {len(x)} samples, seconds by chunk: "
              + " ".join(f"{c}: {statistics.median(t):.3f}" for c, t in times.items()), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES), help="arch:CxHxW, comma-separated")
    p.add_argument("--retain", type=int, default=256)
    p.add_argument("--forget", type=int, default=32)
    p.add_argument("--published-samples", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layout", choices=("channels_last", "contiguous"), default="channels_last",
                   help="the nets' memory layout, for every arm (the pipeline's default: channels_last)")
    p.add_argument("--calibrate", action="store_true", help="time FF's statistic per chunk size instead")
    args = p.parse_args()
    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import warnings
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"retain {args.retain}, forget {args.forget}; {args.layout} nets; medians of {args.repeats}")
    if args.calibrate:
        calibrate(args.cases.split(","), args)
        return
    for case in args.cases.split(","):
        run_case(case, args)


if __name__ == "__main__":
    main()
