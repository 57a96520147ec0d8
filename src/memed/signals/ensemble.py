"""Weighted mean of the models' probabilities, per token and horizon, over the models that scored it."""

from __future__ import annotations

import numpy as np


def ensemble(probs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """``probs``: model → [N, H] p_up (NaN where the model did not score the token). Returns [N, H]
    (NaN where no model scored)."""
    if not probs:
        raise ValueError("ensemble of no model")
    total = wsum = None
    for name, p in probs.items():
        w = float(weights.get(name, 1.0))
        missing = np.isnan(p)
        contrib = p * w
        contrib[missing] = 0.0
        weight = np.where(missing, 0.0, w)
        if total is None or wsum is None:
            total, wsum = contrib, weight
        else:
            total += contrib
            wsum += weight
    assert total is not None
    assert wsum is not None
    with np.errstate(invalid="ignore", divide="ignore"):
        total /= wsum  # 0 / 0 where no model scored: NaN
    return total
