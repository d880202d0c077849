"""The measurements behind the speed defaults: memory layout and optimiser kernel, per step.

    python benchmarks/layout.py                     # CPU, 3x32x32 batch 256 and digits-sized 1x8x8 batch 64
    python benchmarks/layout.py --device cuda --arch resnet18 --batch-size 512

Layout: training steps (forward, backward, SGD step) and inference batches of each architecture
with the net and its input contiguous (NCHW) or channels-last, interleaved step by step; median
images/s over `--steps` after a warm-up step. Optimiser: one SGD step (momentum, weight decay)
over the architecture's parameters with torch's per-tensor loop, foreach and fused kernels,
interleaved; median milliseconds. Prints `channels_last_speedup_<what>=` lines (channels-last /
contiguous throughput) and `fused_speedup_<arch>=` (best other kernel / fused time).
"""

from __future__ import annotations

import argparse
import time

import harness
import torch
import torch.nn.functional as F

from sparse_mu.config import build


def step_rates(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Images/s of training steps and of inference passes, one of each per call of the loop."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    train, infer = [], []
    for _ in range(steps):
        net.train()
        harness.sync(device)
        start = time.perf_counter()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        harness.sync(device)
        train.append(len(x) / (time.perf_counter() - start))
        net.eval()
        with torch.inference_mode():
            start = time.perf_counter()
            net(x)
            harness.sync(device)
            infer.append(len(x) / (time.perf_counter() - start))
    return train, infer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="small_cnn,resnet20s", help="comma-separated sparse_mu/conf/arch options")
    p.add_argument("--shapes", default="3x32x256,1x8x64", help="CxSIZExBATCH cases, comma-separated")
    p.add_argument("--steps", type=int, default=8, help="interleaved rounds")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(f"machine: {harness.machine(device)}")
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    for arch in args.arch.split(","):
        for shape in args.shapes.split(","):
            c, size, batch = map(int, shape.split("x"))
            if arch.startswith("resnet") and size < 16:
                continue  # the ResNets downsample 8x
            node = harness.compose([f"arch={arch}"]).arch
            g = torch.Generator().manual_seed(0)
            x = torch.randn(batch, c, size, size, generator=g).to(device)
            y = torch.randint(0, 10, (batch,), generator=g).to(device)
            nets = {}
            for name, fmt in layouts.items():
                torch.manual_seed(0)
                nets[name] = (build(node, num_classes=10, in_channels=c, image_size=size).to(device, memory_format=fmt),
                              x.contiguous(memory_format=fmt))
            rates = {name: ([], []) for name in layouts}
            for net, xi in nets.values():
                step_rates(net, xi, y, 1, device)  # warm-up
            for _ in range(args.steps):
                for name, (net, xi) in nets.items():
                    train, infer = step_rates(net, xi, y, 1, device)
                    rates[name][0].extend(train)
                    rates[name][1].extend(infer)
            for i, what in enumerate(("train", "infer")):
                med = {name: harness.median(r[i]) for name, r in rates.items()}
                tag = f"{arch}_{what}_{c}x{size}x{size}_b{batch}"
                print(f"{tag}: contiguous {med['contiguous']:.0f} img/s, channels_last {med['channels_last']:.0f} img/s")
                print(f"channels_last_speedup_{tag}={med['channels_last'] / med['contiguous']:.2f}")
        net = build(harness.compose([f"arch={arch}"]).arch, num_classes=10, in_channels=3, image_size=32).to(device)
        params = list(net.parameters())
        for prm in params:
            prm.grad = torch.randn_like(prm)
        kernels = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
        opts = {k: torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4, **kw) for k, kw in kernels.items()}
        times: dict[str, list[float]] = {k: [] for k in opts}
        for _ in range(3 * args.steps + 2):
            for k, opt in opts.items():
                harness.sync(device)
                start = time.perf_counter()
                opt.step()
                harness.sync(device)
                times[k].append(time.perf_counter() - start)
        med = {k: 1e3 * harness.median(v[2:]) for k, v in times.items()}
        print(f"{arch} SGD step, {sum(p.numel() for p in params)} parameters: "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items()))
        print(f"fused_speedup_{arch}={min(med['loop'], med['foreach']) / med['fused']:.2f}")


if __name__ == "__main__":
    main()
