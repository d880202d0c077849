"""Un-pruning: KL between outputs, and the whole route against retrain-then-prune end to end."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_mu import pipeline
from sparse_mu.errors import ConfigError
from sparse_mu.metrics import kl_divergence

KEYS = ("mask_IoU", "mask_IoM", "KL_test", "KL_forget")


def test_kl_divergence():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-9)
    q = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    expected = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + math.log(1 / 0.5)) / 2
    assert kl_divergence(p, q) == pytest.approx(expected)
    assert kl_divergence(q, p) > 5  # q puts mass where p has none: large, but finite
    assert math.isfinite(kl_divergence(q, p))


def test_unpruning_end_to_end(tiny_cfg, tmp_path):
    # Retrain as the unlearner: the unlearned dense model is the reference's dense model, so
    # un-pruning must find exactly the reference mask.
    cfg = tiny_cfg("unprune.enabled=true", "pruner.sparsity=0.9", "unlearner=retrain", "unlearner.epochs=6")
    m = pipeline.run(cfg, tmp_path / "a")
    for key in KEYS:
        for k in (key, f"{key}_original"):
            assert 0 <= m[k] <= 100 if k.startswith("mask") else m[k] >= 0, k
    assert m["mask_IoU"] == m["mask_IoM"] == 100.0
    assert m["mask_IoU_original"] < 100  # pruning the model trained on D_f found another mask
    assert m["KL_forget"] < m["KL_forget_original"]
    layer = next(iter(m["mask_layers"].values()))
    assert set(layer) == {"IoU", "IoM", "IoU_original", "IoM_original"}
    un = m["unpruned"]
    assert un["sparsity"] == pytest.approx(90.0, abs=0.01) and un["RTE_s"] > 0
    assert {"UA", "RA", "TA", "MIA_efficacy"} <= set(un) and un["RA"] > 90

    # FT, a short retraining: the dense reference and its pruned model come from the cache
    ft = pipeline.run(tiny_cfg("unprune.enabled=true", "pruner.sparsity=0.9", "unprune.finetune_epochs=1"), tmp_path / "b")
    assert ft["artifacts"]["unprune_reference"] == m["artifacts"]["unprune_reference"]
    assert ft["artifacts"]["unpruned"] != m["artifacts"]["unpruned"]
    assert 0 <= ft["mask_IoU"] <= 100 and ft["mask_IoU_original"] == m["mask_IoU_original"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["pruner=dense"], "pruner must be a pruner of the trained dense model"),
    (["pruner=synflow"], "pruner must be a pruner of the trained dense model"),
    (["unprune.finetune_epochs=0"], "unprune.finetune_epochs must be an integer >= 1 or null"),
])
def test_bad_unprune_settings_fail_before_training(tiny_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        pipeline.setup(tiny_cfg("unprune.enabled=true", *overrides), tmp_path / "out")
