"""Weighted mean of the models' probabilities, per token and horizon, over the models that scored it."""

from __future__ import annotations

import numpy as np


def ensemble(probs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """``probs``: model → [N, H] p_up (NaN where the model did not score the token). Returns [N, H]
    (NaN where no model scored)."""
    total = None
    wsum = None
    for name, p in probs.items():
        w = float(weights.get(name, 1.0))
        have = ~np.isnan(p)
        contrib = np.where(have, p * w, 0.0)
        total = contrib if total is None else total + contrib
        wsum = have * w if wsum is None else wsum + have * w
    if total is None or wsum is None:
        raise ValueError("ensemble of no model")
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.where(wsum > 0, total / wsum, np.nan)
    return out
