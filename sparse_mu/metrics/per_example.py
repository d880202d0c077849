"""Per-example tests of unlearned models against many retrained ones (ALGORITHMS.md section 8).

Inputs are the outputs of several models on the same examples: `logits` of shape
[models, examples, classes] and the examples' labels. Every function is written from the
papers' definitions:

- `scaled_confidence`: log(p_y / (1 - p_y)), the statistic of U-LiRA and the challenge.
- `ulira`: U-LiRA (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid
  a false sense of privacy"): per example, Gaussians fitted to the scaled confidence under
  unlearned and under retrained models; a held-out model's likelihood ratio decides which it is.
- `forgetting_quality`: the NeurIPS 2023 Machine Unlearning Challenge's per-example epsilon
  from threshold attacks at delta, binned into scores, averaged (F), and the final score.
- `klom`: KL divergence of the per-example margin distributions (Rinberg et al.,
  data-unlearning-bench), binned.
- `js_divergence`, `activation_distance`, `weight_distance`: cheap distances to Retrain.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve


def scaled_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(p_y / (1 - p_y)) = z_y - logsumexp(z_c, c != y), computed stably ([..., examples])."""
    logits = logits.double()
    y = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    true = logits.gather(-1, y).squeeze(-1)
    others = logits.scatter(-1, y, -math.inf)
    return true - torch.logsumexp(others, -1)


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct-class logit minus the largest other logit ([..., examples])."""
    y = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    true = logits.double().gather(-1, y).squeeze(-1)
    return true - logits.double().scatter(-1, y, -math.inf).amax(-1)


def _gaussian_logpdf(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)


def ulira(unlearned: torch.Tensor, retrained: torch.Tensor, min_std: float = 1e-3) -> dict[str, float]:
    """U-LiRA over examples from scaled confidences [models, examples] of each kind.

    Each model in turn is the target (left out of the fits); per example, Gaussians are fitted
    to the other unlearned and the other retrained models' values, and the score is the log
    likelihood ratio unlearned : retrained. Returns the attack's balanced accuracy (ratio > 1
    means "unlearned"), AUC over (target model, example) pairs and TPR at 1 % FPR, in percent
    (accuracy and AUC 50 = indistinguishable). Needs at least 3 models of each kind.
    """
    n_u, n_r = len(unlearned), len(retrained)
    if min(n_u, n_r) < 3:
        raise ValueError("U-LiRA needs at least 3 unlearned and 3 retrained models")
    scores, labels = [], []
    for kind, models in ((1, unlearned), (0, retrained)):
        for j in range(len(models)):
            u = unlearned if kind == 0 else torch.cat([unlearned[:j], unlearned[j + 1:]])
            r = retrained if kind == 1 else torch.cat([retrained[:j], retrained[j + 1:]])
            mu_u, sd_u = u.mean(0), u.std(0).clamp_min(min_std)
            mu_r, sd_r = r.mean(0), r.std(0).clamp_min(min_std)
            x = models[j]
            scores.append(_gaussian_logpdf(x, mu_u, sd_u) - _gaussian_logpdf(x, mu_r, sd_r))
            labels.append(torch.full_like(x, kind))
    s, y = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    fpr, tpr, _ = roc_curve(y, s)
    pred = s > 0
    balanced = 0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean())
    return {"ulira_acc": 100 * float(balanced), "ulira_auc": 100 * float(roc_auc_score(y, s)),
            "ulira_tpr_at_1fpr": 100 * float(np.interp(0.01, fpr, tpr))}


def example_epsilons(unlearned: torch.Tensor, retrained: torch.Tensor, delta: float = 0.01) -> torch.Tensor:
    """Per example, the challenge's epsilon from the scaled confidences [models, examples].

    Every threshold t (each observed value, both directions: "unlearned" above or below t) is
    an attack with false-positive rate FPR (retrained models called unlearned) and false-negative
    rate FNR; epsilon = max over attacks of log((1 - delta - FPR) / FNR) and
    log((1 - delta - FNR) / FPR), terms with a zero denominator or a non-positive numerator left
    out, and at least 0.
    """
    u, r = unlearned.double().T, retrained.double().T  # [examples, models]
    thresholds = torch.cat([u, r], 1)  # [examples, T]
    # attack "unlearned if value >= t": FNR = share of unlearned below t, FPR = retrained at/above t
    fnr = (u[:, :, None] < thresholds[:, None, :]).double().mean(1)
    fpr = (r[:, :, None] >= thresholds[:, None, :]).double().mean(1)
    rates = [(fpr, fnr), (1 - fpr, 1 - fnr)]  # the opposite direction flips both
    eps = torch.zeros(u.shape[0], dtype=torch.float64)
    for a, b in rates:
        for num, den in ((1 - delta - a, b), (1 - delta - b, a)):
            ok = (num > 0) & (den > 0)
            term = torch.where(ok, (num.clamp_min(1e-300) / den.clamp_min(1e-300)).log(), torch.zeros_like(num))
            eps = torch.maximum(eps, term.amax(1))
    return eps


def forgetting_quality(unlearned: torch.Tensor, retrained: torch.Tensor, delta: float = 0.01,
                       bin_width: float = 0.5) -> float:
    """F: the mean over examples of 2 / 2^n, n = 1 + floor(epsilon / bin_width).

    Epsilon is a maximum over thresholds of noisy rate estimates, so it is biased up with few
    models: two identical distributions score F ~0.29 with 32, and with 128, models per side
    (measured on Gaussian draws, tests/test_per_example.py); F is a comparison between methods
    at the same number of models, not an absolute scale whose top is reached.
    """
    eps = example_epsilons(unlearned, retrained, delta)
    n = 1 + torch.floor(eps / bin_width)
    return float((2.0 / 2.0 ** n).mean())


def challenge_score(quality: float, ra_u: float, ra_r: float, ta_u: float, ta_r: float) -> float:
    """The challenge's final score: F x (RA_u / RA_r) x (TA_u / TA_r)."""
    return quality * (ra_u / ra_r) * (ta_u / ta_r)


def klom(unlearned: torch.Tensor, retrained: torch.Tensor, bins: int = 10, eps: float = 1.0) -> torch.Tensor:
    """Per example, KL(unlearned || retrained) of the margin distributions [models, examples],
    each a histogram over `bins` equal bins spanning both kinds' values, with `eps` pseudo-counts
    per bin (Laplace smoothing: with tens of models an empty bin is sampling noise, and an
    unsmoothed KL would be infinite)."""
    u, r = unlearned.double().T, retrained.double().T
    low = torch.minimum(u.amin(1), r.amin(1))[:, None]
    high = torch.maximum(u.amax(1), r.amax(1))[:, None]
    width = (high - low).clamp_min(1e-12) / bins

    def hist(v: torch.Tensor) -> torch.Tensor:
        idx = ((v - low) / width).floor().clamp(0, bins - 1).long()
        counts = torch.zeros(v.shape[0], bins, dtype=torch.float64).scatter_add_(1, idx, torch.ones_like(v))
        p = counts + eps
        return p / p.sum(1, keepdim=True)

    p, q = hist(u), hist(r)
    return (p * (p / q).log()).sum(1)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over examples of the Jensen-Shannon divergence (nats) between probability rows."""
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)

    def kl_to_m(a: torch.Tensor) -> torch.Tensor:
        return (torch.xlogy(a, a) - torch.xlogy(a, m)).sum(-1)

    return float((0.5 * kl_to_m(p) + 0.5 * kl_to_m(q)).mean())


def activation_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over examples of the L2 distance between output probability rows."""
    return float((p.double() - q.double()).norm(dim=-1).mean())


def weight_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """L2 distance between two models' parameters (floating-point tensors of equal names)."""
    sq = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a if a[k].is_floating_point())
    return math.sqrt(sq)
