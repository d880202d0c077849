"""Building N Retrain references one by one vs as one vectorised ensemble (torch.func).

    OMP_NUM_THREADS=1 python benchmarks/reference_ensemble.py [--models 16 --epochs 5 --hidden 256]

The references of the store (docs/evaluation.md) differ only in their training seed: the same
init, the same data (digits' D_r-sized set of 8x8 images), their own shuffled batch order. Two
arms train the same N models with the same plain SGD (momentum 0.9, weight decay 5e-4):
  loop      one model after another, `torch.optim.SGD`, one forward/backward per batch
  ensemble  the N models' parameters stacked (`torch.func.stack_module_state`), one
            `vmap(grad(loss))` call per step over the N models' own batches, the same update
            applied to the stacked tensors
After training, each ensemble member is checked against its loop twin (largest relative
difference printed; the run stops above 1e-3). The model is an MLP (64 -> hidden -> hidden -> 10):
BatchNorm's running statistics are in-place buffer updates that vmap does not batch.
Times are the process's CPU seconds (`time.process_time`; one thread): on a shared machine wall
time mostly measures the neighbours. One untimed warm-up of each arm first. Prints
`ensemble_speedup=<loop CPU seconds / ensemble CPU seconds>`.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap


def mlp(hidden: int) -> nn.Module:
    torch.manual_seed(0)  # one init for every reference, as Retrain starts from the base model's
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def orders(n_models: int, n: int, epochs: int) -> list[torch.Tensor]:
    """Each model's sample order over all epochs (its training seed)."""
    return [torch.cat([torch.randperm(n, generator=torch.Generator().manual_seed(s * 1000 + e))
                       for e in range(epochs)]) for s in range(n_models)]


def batches(order: torch.Tensor, n: int, batch: int) -> list[torch.Tensor]:
    """Per epoch, the full batches (the last partial one dropped, so every model steps alike)."""
    out = []
    for e in range(len(order) // n):
        ep = order[e * n:(e + 1) * n]
        out += [ep[i:i + batch] for i in range(0, n - batch + 1, batch)]
    return out


def loop(x, y, plan, hidden, lr, wd) -> tuple[list[dict], float]:
    start = time.process_time()
    states = []
    for steps in plan:
        net = mlp(hidden)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
        for idx in steps:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        states.append({k: v.detach().clone() for k, v in net.named_parameters()})
    return states, time.process_time() - start


def ensemble(x, y, plan, hidden, lr, wd) -> tuple[dict, float]:
    start = time.process_time()
    nets = [mlp(hidden) for _ in plan]
    params, buffers = stack_module_state(nets)
    params = {k: v.detach().clone() for k, v in params.items()}
    base = mlp(hidden).to("meta")

    def loss(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    step_grads = vmap(grad(loss))
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    for step in range(len(plan[0])):
        idx = torch.stack([steps[step] for steps in plan])  # [models, batch]
        grads = step_grads(params, buffers, x[idx], y[idx])
        with torch.no_grad():
            for k, p in params.items():
                g = grads[k] + wd * p
                velocity[k].mul_(0.9).add_(g)  # torch.optim.SGD's momentum (dampening 0)
                p.sub_(lr * velocity[k])
    return params, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    digits = load_digits()
    x = torch.tensor(digits.images[:1165], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target[:1165])
    plan = [batches(o, len(x), args.batch) for o in orders(args.models, len(x), args.epochs)]
    warm = [p[:3] for p in plan[:2]]
    loop(x, y, warm, args.hidden, 0.05, 5e-4)
    ensemble(x, y, warm, args.hidden, 0.05, 5e-4)
    times = {"loop": [], "ensemble": []}
    for _ in range(args.repeats):  # interleaved; the best of each counts
        states, t = loop(x, y, plan, args.hidden, 0.05, 5e-4)
        times["loop"].append(t)
        stacked, t = ensemble(x, y, plan, args.hidden, 0.05, 5e-4)
        times["ensemble"].append(t)
    worst = max(float((stacked[k][i] - s[k]).abs().max() / s[k].abs().max().clamp_min(1e-12))
                for i, s in enumerate(states) for k in s)
    print(f"models={args.models} epochs={args.epochs} hidden={args.hidden} batch={args.batch} "
          f"steps/model={len(plan[0])} threads={torch.get_num_threads()}")
    print(f"max relative difference ensemble vs loop: {worst:.2e}")
    if worst > 1e-3:
        raise SystemExit("the ensemble does not train the loop's models")
    lo, en = min(times["loop"]), min(times["ensemble"])
    print(f"loop {lo:.2f} CPU s  ensemble {en:.2f} CPU s  ensemble_speedup={lo / en:.2f}")


if __name__ == "__main__":
    main()
