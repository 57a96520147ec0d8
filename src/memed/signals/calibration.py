"""Calibrated probabilities: the map each served model's ``p_up`` goes through, per horizon, before the
ensemble (the same function in the daemon and the backtester; fitted on the validation split by
:mod:`memed.trainers.calibration`, stored in the manifest).

* ``identity``: ``p`` unchanged (sets made before calibration existed, or where it did not help);
* ``platt``: ``sigmoid(a * logit(p) + b)``;
* ``isotonic``: a non-decreasing piecewise-linear map through knots ``(x, y)`` (flat beyond the ends).

Every calibrated probability lies in ``[P_MIN, 1 - P_MIN]``; NaN (not scored) stays NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memed.models.manifest import Calibration

P_MIN = 1e-4
IDENTITY = Calibration()


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, P_MIN, 1.0 - P_MIN)
    out: np.ndarray = np.log(q) - np.log1p(-q)
    return out


def calibrate(cal: Calibration, p: np.ndarray) -> np.ndarray:
    """``p`` (any shape) through one calibration map."""
    if cal.method == "identity":
        return p
    if cal.method == "platt":
        out = 0.5 * (1.0 + np.tanh(0.5 * (cal.a * logit(p) + cal.b)))  # the logistic, without overflow
    else:
        out = np.interp(p, np.asarray(cal.x), np.asarray(cal.y))
    out = np.clip(out, P_MIN, 1.0 - P_MIN)
    out[np.isnan(p)] = np.nan
    return out


def calibrate_columns(cals: Sequence[Calibration], p: np.ndarray) -> np.ndarray:
    """``p`` [rows, H] with horizon ``k`` through ``cals[k]`` (identity where there are none)."""
    if not cals or all(c.method == "identity" for c in cals):
        return p
    if len(cals) != p.shape[1]:
        raise ValueError(f"{len(cals)} calibrations for {p.shape[1]} horizons")
    return np.column_stack([calibrate(c, p[:, k]) for k, c in enumerate(cals)])
