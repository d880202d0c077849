"""UA, RA, TA and MIA of one model for one forget set; gaps to Retrain; Disparity Average."""

from __future__ import annotations

import os

import torch
from joblib import Parallel, delayed
from torch import nn

from sparse_mu.data import ForgetSet, ImageData
from sparse_mu.metrics.accuracy import accuracy, predict
from sparse_mu.metrics.backdoor import attack_success
from sparse_mu.metrics.mia import mia_efficacy, mia_privacy

GAP_KEYS = ("UA", "RA", "TA", "MIA_efficacy")
# The nested records of metrics.json whose numbers go to the loggers and the sweep reports.
NESTED = ("retrain", "gap", "original", "transfer_acc", "transfer_time_s", "unpruned", "per_example",
          "per_example_original")


def evaluate(net: nn.Module, data: ImageData, forget: ForgetSet, *, seed: int, batch_size: int = 1024,
             device: torch.device | str = "cpu", mia_features=("confidence",), privacy: bool = False,
             precision: str = "32-true") -> dict:
    """All evaluation metrics (percent) of `net`, with eval transforms.

    UA = 100 - Acc(D_f); RA = Acc(D_r); TA = Acc(test) (class-wise: without the forgotten
    classes, whose own test accuracy is `TA_forgotten_class`); MIA_efficacy with the confidence
    feature (plus `MIA_efficacy_<feature>` for other features asked for), MIA_privacy if
    `privacy`. Backdoor forgetting adds SA (clean test accuracy) and ASR / ASR_legacy on the
    triggered test images (`attack_success`). The net runs under the autocast of the trainer's
    `precision`.
    """
    net = net.to(device)

    def outputs(idx: torch.Tensor):
        return predict(net, data.loader(idx, batch_size=batch_size, train=False, device=device), precision)

    train_p, train_y = outputs(data.train)
    test_p, test_y = outputs(data.test)
    row = torch.full((len(data.y),), -1, dtype=torch.long)
    row[data.train] = torch.arange(len(data.train))
    f_rows, r_rows = row[forget.forget], row[forget.retain]
    forget_out = (train_p[f_rows], train_y[f_rows])
    retain_out = (train_p[r_rows], train_y[r_rows])
    keep = ~forget.forgotten_test(data)
    test_out = (test_p[keep], test_y[keep])
    m = {
        "UA": 100.0 - accuracy(*forget_out),
        "RA": accuracy(*retain_out),
        "TA": accuracy(*test_out),
    }
    if forget.classes or forget.fine_class is not None:
        m["TA_forgotten_class"] = accuracy(test_p[~keep], test_y[~keep])
    if forget.backdoor is not None:
        triggered = forget.backdoor.triggered_test(data)
        trig_p, trig_y = predict(net, triggered.loader(triggered.test, batch_size=batch_size, train=False, device=device),
                                 precision)
        m |= {"SA": accuracy(test_p, test_y), **attack_success(trig_p, trig_y, forget.backdoor.target_class)}
    # One SVC per requested attack; libsvm releases the GIL, so threads fit them side by side.
    attacks = {("MIA_efficacy" if i == 0 else f"MIA_efficacy_{name}"): (mia_efficacy, (retain_out, test_out, forget_out, seed, name))
               for i, name in enumerate(mia_features)}
    if privacy:
        attacks["MIA_privacy"] = (mia_privacy, (retain_out, test_out, seed, mia_features[0]))
    results = Parallel(n_jobs=min(len(attacks), os.cpu_count() or 1), prefer="threads")(
        delayed(fn)(*args) for fn, args in attacks.values())
    return m | dict(zip(attacks, results, strict=True))


def gaps(metrics: dict, reference: dict) -> dict:
    """Signed gap to the Retrain reference per metric (method minus Retrain)."""
    return {k: metrics[k] - reference[k] for k in GAP_KEYS}


def disparity_average(gap: dict) -> float:
    """Mean |gap| over UA, MIA-Efficacy, RA and TA (lower is closer to Retrain).

    A NaN gap makes it NaN: a mean over fewer terms would rank a run whose metric failed
    against runs that have all four."""
    return sum(abs(gap[k]) for k in GAP_KEYS) / len(GAP_KEYS)
