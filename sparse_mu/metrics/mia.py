"""Membership inference (population attack with Song & Mittal's features).

One scikit-learn SVC(C=3, rbf, gamma="auto") per feature, as in the paper's code; the modified
entropy follows Song & Mittal (fixed: the published code's version is wrong).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.svm import SVC

FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "prob")
_EPS = 1e-30


def features(probs: torch.Tensor, labels: torch.Tensor, name: str) -> np.ndarray:
    """The attack feature `name` of each sample, as an (n, d) array."""
    p = probs.double().clamp_min(0)
    p_y = p.gather(1, labels[:, None]).squeeze(1)
    if name == "correctness":
        f = (p.argmax(1) == labels).double()
    elif name == "confidence":
        f = p_y
    elif name == "entropy":
        f = -(p * p.clamp_min(_EPS).log()).sum(1)
    elif name == "m_entropy":
        # -(1 - p_y) log p_y - sum_{c != y} p_c log(1 - p_c)
        others = p * (1 - p).clamp_min(_EPS).log()
        others = others.sum(1) - others.gather(1, labels[:, None]).squeeze(1)
        f = -(1 - p_y) * p_y.clamp_min(_EPS).log() - others
    elif name == "prob":
        return p.numpy()
    else:
        raise ValueError(f"unknown MIA feature {name!r}; allowed: {', '.join(FEATURES)}")
    return f.numpy()[:, None]


def _attack(members: tuple, non_members: tuple, name: str) -> SVC:
    x = np.concatenate([features(*members, name), features(*non_members, name)])
    y = np.concatenate([np.ones(len(members[1])), np.zeros(len(non_members[1]))])
    return SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)


def _take(pair: tuple, idx: torch.Tensor) -> tuple:
    return pair[0][idx], pair[1][idx]


def mia_efficacy(retain: tuple, test: tuple, forget: tuple, seed: int, name: str = "confidence") -> float:
    """% of D_f the attack calls non-members (higher = more forgotten).

    Shadow members: |test| samples of D_r (seeded); shadow non-members: the test set; target: D_f.
    Each argument is a (probs, labels) pair.
    """
    if len(forget[1]) == 0:
        return float("nan")
    g = torch.Generator().manual_seed(seed)
    shadow_in = _take(retain, torch.randperm(len(retain[1]), generator=g)[: len(test[1])])
    clf = _attack(shadow_in, test, name)
    return 100.0 * float((clf.predict(features(*forget, name)) == 0).mean())


def mia_privacy(retain: tuple, test: tuple, seed: int, name: str = "confidence") -> float:
    """Balanced accuracy (%) of an attack telling D_r members from test samples.

    Half of the test set and as many D_r samples train the attack (shadow); the other half and
    as many other D_r samples are its target. 50 % = no leakage.
    """
    g = torch.Generator().manual_seed(seed)
    t = torch.randperm(len(test[1]), generator=g)
    r = torch.randperm(len(retain[1]), generator=g)
    h = len(t) // 2
    n_target = min(len(t) - h, len(r) - h)
    clf = _attack(_take(retain, r[:h]), _take(test, t[:h]), name)
    members, non_members = _take(retain, r[h:h + n_target]), _take(test, t[h:h + n_target])
    pred = clf.predict(np.concatenate([features(*members, name), features(*non_members, name)]))
    truth = np.concatenate([np.ones(n_target), np.zeros(n_target)])
    return 100.0 * float(balanced_accuracy_score(truth, pred))
