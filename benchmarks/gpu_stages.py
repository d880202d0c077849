"""GPU figures: CIFAR-10-sized ResNet-18 training throughput and the unlearning stage times.

    python benchmarks/gpu_stages.py                          # on a CUDA machine, ~10 minutes on an H100
    python benchmarks/gpu_stages.py --retrain-epochs 20      # shorter: Retrain's time per epoch is what matters
    python benchmarks/gpu_stages.py --device cpu --arch small_cnn --n-train 2000 --epochs 1 \
        --retrain-epochs 1 --ft-epochs 1                     # a smoke test of the script itself

Data: synthetic uint8 32x32x3 images in 10 classes, in a temporary .npz: `--n-train` train
images (D is 90 % of them: 45,000 for the default 50,000) and a fifth as many test images. The
timing does not depend on the pixels; `--data` takes a real CIFAR-10 .npz instead.

1. epoch: our framework path (`Job.fit` with the configured trainer: bf16-mixed, channels-last,
   fused SGD on a GPU) training `--arch` on D at batch 256; images/s and seconds per epoch,
   median of `--repeats` fits of `--epochs` epochs after a one-epoch warm-up; peak GPU memory.
   Then one epoch under `torch.cuda.set_sync_debug_mode("warn")`: the number of host
   synchronisations (a per-step sync would show as one per batch).
2. stages: `python run.py`'s pipeline with `pruner=dense forget=random forget.fraction=0.1`
   (the paper's random forgetting) and, one run each, the unlearners FT (`--ft-epochs`, paper 10),
   Retrain (`--retrain-epochs`, paper 182), and FF, IU where sparse_mu/conf/unlearner has them (their
   per-sample-gradient chunks sized by `--memory-mb`); the stage time is the unlearning loop's
   `RTE_s` (device synchronised), as in metrics.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import harness
import torch

from sparse_mu import pipeline
from sparse_mu.config import build

UNLEARNERS = ("ft", "retrain", "ff", "iu")  # the paper's FT, Retrain, FF (Fisher), IU (influence)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--data", default=None, help="a CIFAR-10-sized .npz; default: synthetic")
    p.add_argument("--n-train", type=int, default=50_000, help="synthetic train images (D is 90 %%)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3, help="epochs per timed fit (section 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ft-epochs", type=int, default=10)
    p.add_argument("--retrain-epochs", type=int, default=182)
    p.add_argument("--memory-mb", type=float, default=8192,
                   help="FF/IU per-sample-gradient memory budget (unlearner.memory_mb; config default 1024)")
    p.add_argument("--compile", action="store_true", help="fast.compile=true (torch.compile) everywhere")
    p.add_argument("--skip-stages", action="store_true")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace, data: Path, work: Path) -> list[str]:
    return [
        "dataset=npz", f"dataset.path={data}", f"arch={args.arch}", f"train.batch_size={args.batch_size}",
        "logger=csv", "callbacks.progress.interactive=false", f"fast.compile={str(args.compile).lower()}",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"paths.cache_dir={work / 'cache'}", f"paths.output_dir={work / 'out'}",
    ]


def epoch_section(args: argparse.Namespace, data: Path, work: Path) -> None:
    cfg = harness.compose([*overrides(args, data, work), f"train.epochs={args.epochs}", "train.rewind_epoch=0"])
    job = pipeline.setup(cfg, work / "out")
    device = job.device
    print(f"machine: {harness.machine(device)}")
    print(f"settings: precision {cfg.trainer.precision}, channels_last {cfg.fast.channels_last}, "
          f"compile {cfg.fast.compile}, cudnn.benchmark {cfg.trainer.benchmark}")

    def fit(epochs: int) -> float:
        module = build(cfg.train, net=job.make_net(), data=job.data, indices=job.data.train, seed=0, epochs=epochs)
        return job.fit(module, "epoch benchmark", None, False)

    n = len(job.data.train)
    fit(1)  # warm-up: cuDNN autotuning, allocator, compilation
    seconds = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds.append(fit(args.epochs) / args.epochs)
    epoch = harness.median(seconds)
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else ""
    print(f"{args.arch} training, {n} images/epoch, batch {args.batch_size}: {epoch:.3f} s/epoch, "
          f"{n / epoch:.0f} images/s (epochs: {' '.join(f'{s:.3f}' for s in seconds)}){peak}")
    print(f"epoch_s={epoch:.3f}")
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(1)
        torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        steps = -(-n // args.batch_size)
        print(f"host synchronisations in a {steps}-step epoch (with the fit's set-up and end): {len(syncs)}")
        for w in syncs[:5]:
            print(f"  {w.filename}:{w.lineno}: {str(w.message)[:120]}")


def stages_section(args: argparse.Namespace, data: Path, work: Path) -> None:
    present = [u for u in UNLEARNERS if (harness.conf_dir() / "unlearner" / f"{u}.yaml").is_file()]
    missing = [u for u in UNLEARNERS if u not in present]
    base = [*overrides(args, data, work), "pruner=dense", "forget=random", "forget.fraction=0.1",
            "eval.retrain_reference=false", "train.epochs=2", "train.rewind_epoch=1"]
    extra_settings = {"ft": [f"unlearner.epochs={args.ft_epochs}"], "retrain": [f"unlearner.epochs={args.retrain_epochs}"],
                      "ff": [f"unlearner.memory_mb={args.memory_mb}"], "iu": [f"unlearner.memory_mb={args.memory_mb}"]}
    for name in present:
        extra = extra_settings[name]
        cfg = harness.compose([*base, f"unlearner={name}", *extra])
        start = time.perf_counter()
        m = pipeline.run(cfg, work / "runs" / name)
        wall = time.perf_counter() - start
        print(f"stage {name}: RTE {m['RTE_s']:.1f} s ({m['hparams'].get('epochs', 1)} epochs), run wall {wall:.1f} s, "
              f"UA {m['UA']:.1f} RA {m['RA']:.1f} TA {m['TA']:.1f}")
        print(f"{name}_s={m['RTE_s']:.1f}")
    if missing:
        print(f"not in sparse_mu/conf/unlearner on this branch, not timed: {', '.join(missing)}")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --device cpu for a smoke test")
    pipeline.quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else harness.synthetic_npz(work / "cifar_sized.npz", args.n_train, max(1000, args.n_train // 5))
        epoch_section(args, data, work)
        if not args.skip_stages:
            stages_section(args, data, work)


if __name__ == "__main__":
    main()
