"""Weighted mean of the models' probabilities, per token and horizon, over the models that scored it."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _accumulate(total: np.ndarray, wsum: np.ndarray, p: np.ndarray, w: float) -> None:
    """Add one model's weighted probabilities where it scored (not NaN)."""
    for i in range(p.shape[0]):
        for k in range(p.shape[1]):
            x = p[i, k]
            if not np.isnan(x):
                total[i, k] += x * w
                wsum[i, k] += w


@njit(cache=True, nogil=True)
def _divide(total: np.ndarray, wsum: np.ndarray) -> None:
    for i in range(total.shape[0]):
        for k in range(total.shape[1]):
            total[i, k] = total[i, k] / wsum[i, k] if wsum[i, k] != 0.0 else np.nan


def ensemble(probs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """``probs``: model → [N, H] p_up (NaN where the model did not score the token). Returns [N, H]
    (NaN where no model scored). Models are added in ``probs``' order, one compiled pass each."""
    if not probs:
        raise ValueError("ensemble of no model")
    first = next(iter(probs.values()))
    total = np.zeros(first.shape)
    wsum = np.zeros(first.shape)
    for name, p in probs.items():
        if p.shape != first.shape:
            raise ValueError(f"{name}: probabilities of shape {p.shape}, expected {first.shape}")
        _accumulate(total, wsum, p, float(weights.get(name, 1.0)))
    _divide(total, wsum)
    return total
