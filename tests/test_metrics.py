"""Membership-inference features and attacks, gaps and the Disparity Average."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparse_mu.metrics import FEATURES, disparity_average, gaps, mia_efficacy, mia_privacy
from sparse_mu.metrics.mia import features


def test_modified_entropy_is_song_and_mittal():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    y = torch.tensor([0])
    expected = -(1 - 0.7) * math.log(0.7) - (0.2 * math.log(1 - 0.2) + 0.1 * math.log(1 - 0.1))
    assert features(p, y, "m_entropy")[0, 0] == pytest.approx(expected)
    # a confident correct prediction has lower modified entropy than a confident wrong one
    wrong = features(p, torch.tensor([2]), "m_entropy")[0, 0]
    assert wrong > expected


def test_feature_shapes():
    p = torch.softmax(torch.randn(5, 4), 1)
    y = torch.randint(0, 4, (5,))
    for name in FEATURES:
        assert features(p, y, name).shape == (5, 4 if name == "prob" else 1)
    with pytest.raises(ValueError, match="unknown MIA feature"):
        features(p, y, "loss")


def _outputs(confidence: float, n: int, seed: int):
    rng = np.random.default_rng(seed)
    c = np.clip(rng.normal(confidence, 0.03, n), 0.11, 0.999)
    probs = np.stack([c] + [(1 - c) / 9] * 9, 1)
    return torch.tensor(probs, dtype=torch.float32), torch.zeros(n, dtype=torch.long)


def test_mia_efficacy_tells_members_from_non_members():
    retain, test = _outputs(0.98, 400, 0), _outputs(0.6, 200, 1)
    forgotten = _outputs(0.6, 100, 2)  # looks like data the model never saw
    remembered = _outputs(0.98, 100, 3)  # looks like training data
    assert mia_efficacy(retain, test, forgotten, seed=0) > 95
    assert mia_efficacy(retain, test, remembered, seed=0) < 5
    assert mia_privacy(retain, test, seed=0) > 95
    assert mia_privacy(_outputs(0.8, 400, 4), _outputs(0.8, 200, 5), seed=0) == pytest.approx(50, abs=10)


def test_gaps_and_disparity_average():
    m = {"UA": 20.0, "RA": 99.0, "TA": 90.0, "MIA_efficacy": 30.0}
    ref = {"UA": 25.0, "RA": 100.0, "TA": 94.0, "MIA_efficacy": 40.0}
    g = gaps(m, ref)
    assert g == {"UA": -5.0, "RA": -1.0, "TA": -4.0, "MIA_efficacy": -10.0}
    assert disparity_average(g) == pytest.approx(5.0)


@pytest.mark.parametrize("key", ["UA", "RA", "TA", "MIA_efficacy"])
def test_a_nan_gap_makes_the_disparity_average_nan(key):
    """Never the mean over the other three."""
    g = {"UA": -5.0, "RA": -1.0, "TA": -4.0, "MIA_efficacy": -10.0} | {key: float("nan")}
    assert math.isnan(disparity_average(g))
