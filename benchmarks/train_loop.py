"""Epoch throughput of our training path against two hand-written PyTorch loops, same work.

    python benchmarks/train_loop.py                      # CPU: CIFAR-sized images, small_cnn
    python benchmarks/train_loop.py --arch small_cnn,resnet20s
    python benchmarks/train_loop.py --device cuda --arch resnet18 --data synthetic --n-train 45000

Contenders, each fitting a freshly initialised net for `--epochs` epochs of `--n-train` images
(a seeded subset of D) at `--batch-size`, trials alternating ours / plain / dataloader:

- ours: the framework as the pipeline runs it. `Job.fit` builds a Lightning Trainer from
  sparse_mu/conf/trainer/default.yaml with the configured callbacks, the MaskEnforcer (a magnitude mask of
  `--sparsity`; 0 runs dense and attaches none), a CSV logger and a `last.ckpt` every epoch, and
  fits the base-model profile `Classifier` (SGD, step schedule) on our `TensorLoader`.
- plain: an eager loop over the same in-memory uint8 tensor: the same batched crop/flip
  (`Augment`), normalisation, optimiser, schedule, masking (gradients, weights, momentum) and
  a checkpoint every epoch. Same model layout, precision and optimiser kernel as ours, so
  ours/plain is the framework's overhead.
- dataloader: the published code's input pipeline: a torchvision-style Dataset of PIL images
  (RandomCrop with padding, RandomHorizontalFlip, ToTensor, Normalize) through a DataLoader with
  `--workers` processes (pinned memory and non-blocking copies on a GPU), the rest as plain.

Throughput is images per second over a whole trial (setup included), median over `--repeats`
trials after a short warm-up trial of each. Memory: the process's peak RSS during a trial and
its rise over the trial's start (the last trial of each contender; DataLoader workers not
counted), and on a GPU the peak allocated GPU memory.
The last two lines are `ratio_vs_dataloader=` (ours / dataloader) and `ratio_vs_plain=`
(ours / plain); with several architectures each is the geometric mean over them.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from sparse_mu import pipeline
from sparse_mu.config import build
from sparse_mu.data import Augment, ImageData
from sparse_mu.pruning import Mask, prunable_weights

CONTENDERS = ("ours", "plain", "dataloader")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None,
                   help="an .npz (x_train, y_train[, x_test, y_test]), 'synthetic' (CIFAR-sized) or "
                        "'digits' (8x8, the default run's); default: ../shared/data/cifar10_small.npz if "
                        "present, else synthetic")
    p.add_argument("--arch", default="small_cnn", help="comma-separated sparse_mu/conf/arch options")
    p.add_argument("--n-train", type=int, default=1024, help="images per epoch")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    p.add_argument("--repeats", type=int, default=3, help="timed trials per contender")
    p.add_argument("--sparsity", type=float, default=0.95, help="mask sparsity (0: dense, no mask)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the baseline")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    return p.parse_args(argv)


class Bench:
    """One architecture's setup: the job (config, data, device), the subset and the mask."""

    def __init__(self, args: argparse.Namespace, arch: str, data_path: Path | None, work: Path):
        self.args, self.work = args, work
        dataset = ["dataset=npz", f"dataset.path={data_path}"] if data_path else ["dataset=digits"]
        overrides = [
            *dataset, f"arch={arch}", f"train.batch_size={args.batch_size}",
            f"train.epochs={args.epochs}", "train.rewind_epoch=0", "logger=none",
            "callbacks.progress.interactive=false", f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
            f"paths.cache_dir={work / 'cache'}", f"paths.output_dir={work / 'out'}",
        ]
        self.cfg = harness.compose(overrides)
        self.job = pipeline.setup(self.cfg, work / "out")
        self.device = self.job.device
        g = torch.Generator().manual_seed(0)
        train = self.job.data.train
        self.indices = train[torch.randperm(len(train), generator=g)[: args.n_train]]
        self.mask = None
        if args.sparsity > 0:
            scores = {k: w.detach().abs() for k, w in prunable_weights(self.job.make_net()).items()}
            self.mask = Mask.from_scores(scores, args.sparsity)
        self._trial = 0

    @property
    def precision(self) -> str:
        return str(self.cfg.trainer.precision)

    @property
    def channels_last(self) -> bool:
        fast = self.cfg.get("fast")
        return bool(fast.channels_last) if fast is not None else False

    def fresh_net(self) -> torch.nn.Module:
        net = self.job.make_net()
        if self.mask is not None:
            self.mask.apply_(net)
        return net.to(self.device)

    def scratch(self) -> Path:
        self._trial += 1
        return self.work / f"trial{self._trial}"

    def run(self, contender: str, indices: torch.Tensor, epochs: int) -> float:
        """Seconds of one trial of `contender` (training only; the net is built beforehand)."""
        net = self.fresh_net()
        harness.sync(self.device)
        start = time.perf_counter()
        if contender == "ours":
            self.ours(net, indices, epochs)
        else:
            loader = self.pil_loader(indices) if contender == "dataloader" else self.tensor_batches(indices)
            self.plain(net, loader, epochs)
        harness.sync(self.device)
        return time.perf_counter() - start

    # -- ours ------------------------------------------------------------------------------
    def ours(self, net: torch.nn.Module, indices: torch.Tensor, epochs: int) -> None:
        from lightning.pytorch.loggers import CSVLogger

        work = self.scratch()
        module = build(self.cfg.train, net=net, data=self.job.data, indices=indices, seed=0, epochs=epochs)
        self.job.fit(module, "bench", self.mask, CSVLogger(work, name="logs", version=""), work / "ckpt")

    # -- the hand-written loops ------------------------------------------------------------------
    def tensor_batches(self, indices: torch.Tensor):
        """Epoch -> batches over the in-memory tensor, as a hand-written loop would make them."""
        data: ImageData = self.job.data
        x_all, y_all = data.x.to(self.device), data.y.to(self.device)
        scale = (1.0 / (255.0 * data.std)).view(1, -1, 1, 1).to(self.device)
        shift = (-data.mean / data.std).view(1, -1, 1, 1).to(self.device)
        augment, bs = Augment(data.augment.crop_padding, data.augment.flip), self.args.batch_size

        def epoch(e: int):
            g = torch.Generator(self.device).manual_seed(e)
            order = indices[torch.randperm(len(indices), generator=torch.Generator().manual_seed(e))].to(self.device)
            for i in range(0, len(order), bs):
                idx = order[i:i + bs]
                x = x_all[idx]
                x = augment(x, g) if augment.active else x
                yield x.float().mul_(scale).add_(shift), y_all[idx]

        return epoch

    def pil_loader(self, indices: torch.Tensor):
        """Epoch -> batches from a torchvision DataLoader decoding PIL images in workers."""
        data: ImageData = self.job.data
        size, aug = data.image_size, data.augment
        tf = ([T.RandomCrop(size, padding=aug.crop_padding)] if aug.crop_padding else []) + \
             ([T.RandomHorizontalFlip()] if aug.flip else []) + \
             [T.ToTensor(), T.Normalize(data.mean.tolist(), data.std.tolist())]
        images = data.x[indices].permute(0, 2, 3, 1).numpy()  # HWC uint8, as the files decode
        dataset = PILImages(images, data.y[indices].numpy(), T.Compose(tf))
        cuda = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.args.batch_size, shuffle=True, num_workers=self.args.workers,
            pin_memory=cuda, persistent_workers=self.args.workers > 0, generator=torch.Generator().manual_seed(0))

        def epoch(e: int):
            for x, y in loader:
                yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)

        return epoch

    def plain(self, net: torch.nn.Module, batches, epochs: int) -> None:
        """A hand-written training loop doing per step what `ours` does (fused SGD; bf16 autocast
        if ours trains in bf16-mixed); self-contained, so it is the same yardstick for any
        version of the framework."""
        hp = self.cfg.train
        opt = torch.optim.SGD(net.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                              fused=True)
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision.startswith("bf16"))
        steps = sorted({max(1, round(m * epochs)) for m in hp.milestones})
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, steps, hp.gamma)
        pairs = list(self.mask.pairs(net)) if self.mask is not None else []
        params = [p for p, _ in pairs]
        masks = [torch.empty_like(p).copy_(m) for p, m in pairs]
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        ckpt = self.scratch() / "last.pt"
        ckpt.parent.mkdir(parents=True)
        net.train()
        for e in range(epochs):
            total = torch.zeros((), device=self.device)
            for x, y in batches(e):
                with amp:
                    loss = F.cross_entropy(net(x.contiguous(memory_format=layout)), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if params:
                    torch._foreach_mul_([p.grad for p in params], masks)
                opt.step()
                if params:
                    with torch.no_grad():
                        torch._foreach_mul_(params, masks)
                        torch._foreach_mul_([opt.state[p]["momentum_buffer"] for p in params], masks)
                total += loss.detach() * len(y)
            sched.step()
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "epoch": e, "loss": total}, ckpt)


class PILImages(torch.utils.data.Dataset):
    """(transform(PIL image), label) per index of HWC uint8 arrays, as torchvision's CIFAR10."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i]
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(img), int(self.labels[i])


def data_file(args: argparse.Namespace, work: Path) -> tuple[Path | None, str]:
    """(path, description) of the data: the given .npz, the shared CIFAR-10 subset, synthetic,
    or no path for digits."""
    if args.data == "digits":
        return None, "digits (scikit-learn, 8x8x1)"
    if args.data not in (None, "synthetic"):
        return Path(args.data), Path(args.data).name
    if args.data is None and harness.CIFAR_SMALL.is_file():
        return harness.CIFAR_SMALL, harness.CIFAR_SMALL.name
    n = max(args.n_train * 10 // 9 + 10, 1000)  # D is 90 % of the train split
    return harness.synthetic_npz(work / "synthetic.npz", n, 1000), "synthetic uint8 32x32x3"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    contenders = args.contenders.split(",")
    pipeline.quiet_libraries()
    ratios: dict[str, list[float]] = {"dataloader": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path, what = data_file(args, work)
        for arch in args.arch.split(","):
            bench = Bench(args, arch, path, work / arch)
            if arch == args.arch.split(",")[0]:
                mask = f"mask {args.sparsity:.0%} (MaskEnforcer on)" if bench.mask is not None else "dense (no mask)"
                print(f"machine: {harness.machine(bench.device)}")
                print(f"data: {what}; {len(bench.indices)} images/epoch, batch {args.batch_size}, {args.epochs} "
                      f"epochs/trial, {args.repeats} trials after a warm-up; {mask}; precision {bench.precision}, "
                      f"channels_last {bench.channels_last}; DataLoader workers {args.workers}")
            for c in contenders:  # warm-up: allocator, kernel caches, imports
                bench.run(c, bench.indices[: 2 * args.batch_size], 1)
            seconds: dict[str, list[float]] = {c: [] for c in contenders}
            memory: dict[str, str] = {}
            for r in range(args.repeats):
                for c in contenders[r % len(contenders):] + contenders[: r % len(contenders)]:
                    if bench.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(bench.device)
                    with harness.PeakRSS() as rss:
                        seconds[c].append(bench.run(c, bench.indices, args.epochs))
                    memory[c] = f"peak RSS {rss.peak:.0f} MB (+{rss.rise:.0f} MB in the trial)"
                    if bench.device.type == "cuda":
                        memory[c] += f", peak GPU memory {torch.cuda.max_memory_allocated(bench.device) / 2**20:.0f} MB"
            images = len(bench.indices) * args.epochs
            speed = {c: images / harness.median(s) for c, s in seconds.items()}
            for c in contenders:
                trials = " ".join(f"{s:.2f}" for s in seconds[c])
                print(f"{arch:10s} {c:10s} {speed[c]:9.1f} img/s  (trial seconds: {trials})  {memory[c]}")
            for base in ratios:
                if "ours" in speed and base in speed:
                    ratios[base].append(speed["ours"] / speed[base])
                    print(f"{arch:10s} ours/{base} = {ratios[base][-1]:.3f}")
    for base in ("dataloader", "plain"):
        if ratios[base]:
            print(f"ratio_vs_{base}={math.exp(sum(map(math.log, ratios[base])) / len(ratios[base])):.3f}")


if __name__ == "__main__":
    main()
