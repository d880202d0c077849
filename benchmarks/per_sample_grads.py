"""Per-sample gradients: vectorised (torch.func, vmap over grad) against per-sample autograd loops.

    python benchmarks/per_sample_grads.py [--image-size 8 --channels 1 --width 32 --batch 256]

Same model, same batch, same gradients (of log p(y_i|x_i), as Fisher forgetting needs), three ways:
  published loop   the paper's code (`fisher_information_martix`): one forward pass over the
                   batch, then one `autograd.grad(log p_i, params, retain_graph=True)` per sample;
                   every call backpropagates through the whole batch's graph
  batch-1 loop     one forward and one backward pass per sample (the cheapest plain loop)
  vectorised       `sparse_mu.unlearn.per_sample.per_sample_grads`: vmap(grad), chunked by a
                   memory budget, as `ff` and `iu` compute them

Model: SmallCNN in eval mode (the default architecture; BatchNorm uses running statistics, as
in FF and IU); data: random images, by default shaped like the default data set (digits,
1x8x8), in one batch of FF's default batch size. Each way runs `--repeats` times, interleaved so
that load from other processes hits all alike; the best time counts. The last line printed is
`speedup=<published loop time / vectorised time>`, the gain over the loop the vectorisation
replaces; the line before it gives the gain over the batch-1 loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparse_mu.models import SmallCNN  # noqa: E402
from sparse_mu.unlearn.per_sample import chunk_size_for, log_likelihood, per_sample_grads  # noqa: E402

Grads = list[tuple[torch.Tensor, ...]]


def published_loop(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Grads:
    params = list(net.parameters())
    log_p = torch.log_softmax(net(x), dim=-1)
    return [torch.autograd.grad(log_p[i, y[i]], params, retain_graph=True) for i in range(len(x))]


def batch1_loop(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Grads:
    params = list(net.parameters())
    return [torch.autograd.grad(torch.log_softmax(net(x[i:i + 1]), -1)[0, y[i]], params) for i in range(len(x))]


def vectorised(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int) -> list[dict]:
    return list(per_sample_grads(net, x, y, chunk_size=chunk, loss=log_likelihood))


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def timed(fn: Callable[[], object], results: list[float]) -> None:
    start = time.perf_counter()
    fn()
    results.append(time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--width", type=int, default=32, help="SmallCNN width (32: the default arch)")
    p.add_argument("--batch", type=int, default=256, help="samples (FF's default batch size)")
    p.add_argument("--memory-mb", type=float, default=1024, help="budget that sets the vmap chunk size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    net = SmallCNN(10, args.channels, args.image_size, width=args.width).eval()
    x = torch.randn(args.batch, args.channels, args.image_size, args.image_size)
    y = torch.randint(0, 10, (args.batch,))
    chunk = min(args.batch, chunk_size_for(net, args.memory_mb))

    # the same numbers first: a timing only compares like with like
    got = next(per_sample_grads(net, x[:8], y[:8], chunk_size=8, loss=log_likelihood))
    for loop in (published_loop, batch1_loop):
        for i, grads in enumerate(loop(net, x[:8], y[:8])):
            for g, v in zip(grads, got.values(), strict=True):
                torch.testing.assert_close(v[i], g, atol=1e-5, rtol=1e-4)

    ways = {
        "published loop": lambda: published_loop(net, x, y),
        "batch-1 loop": lambda: batch1_loop(net, x, y),
        "vectorised": lambda: vectorised(net, x, y, chunk),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    vectorised(net, x[:chunk], y[:chunk], chunk)  # torch.func's first call pays a one-off setup
    for _ in range(args.repeats):
        for name, fn in ways.items():
            timed(fn, times[name])
    best = {name: min(t) for name, t in times.items()}

    n_params = sum(q.numel() for q in net.parameters())
    print(f"model: SmallCNN(width={args.width}) on {args.channels}x{args.image_size}x{args.image_size}, "
          f"{n_params} parameters, eval mode; {args.batch} samples; vmap chunk {chunk}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")
    for name, t in best.items():
        print(f"{name:15s} {t:8.3f} s  ({1e3 * t / args.batch:7.2f} ms/sample)")
    print(f"speedup_vs_batch1_loop={best['batch-1 loop'] / best['vectorised']:.1f}")
    print(f"speedup={best['published loop'] / best['vectorised']:.1f}")


if __name__ == "__main__":
    main()
