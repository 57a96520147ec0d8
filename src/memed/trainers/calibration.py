"""Fitting the calibration maps on the validation split, and measuring calibration on the test split.

Choice of method (identity, Platt, isotonic) on validation only, without scoring a map on the rows it
was fitted on: the validation rows are split into two halves by alternate hours (both halves span the
whole split, so drift within it does not favour one); each method is
fitted on one half and scored (log loss) on the other, both ways. The method with the lowest cross-fitted
log loss is refitted on the whole validation split. Isotonic regression runs on at most ``ISO_BINS``
equal-count bins of the scores (weighted pool-adjacent-violators), so its map is a smooth, small table.

On the test split: the expected calibration error over ``ECE_BINS`` equal-width bins and the reliability
table, each with a day-block bootstrap interval (the same resampled days as every other metric).
"""

from __future__ import annotations

import msgspec
import numpy as np

from memed.models.manifest import Calibration, ReliabilityBin
from memed.signals.calibration import IDENTITY, P_MIN, calibrate, logit
from memed.trainers.uncertainty import _bounds

ISO_BINS = 100
ECE_BINS = 10
NEWTON_TOL = 1e-10
MIN_ROWS = 200
"""Labelled validation rows (with both classes, on at least two days) a calibration needs."""


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, P_MIN, 1 - P_MIN)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def fit_platt(p: np.ndarray, y: np.ndarray, iterations: int = 50) -> Calibration:
    """``sigmoid(a * logit(p) + b)`` with ``a >= 0``, by maximum likelihood (Newton's method on the two
    parameters; numpy only, so the serving install can import this module). ``a >= 0``: a calibration
    map never reverses the model's ranking; a validation split on which it ranks backwards gets a flat
    map at the base rate, not a flipped model."""
    z = logit(p)
    x = np.column_stack([z, np.ones(len(z))])
    theta = np.array([1.0, 0.0])
    for _ in range(iterations):
        m = np.clip(x @ theta, -30.0, 30.0)
        q = 1.0 / (1.0 + np.exp(-m))
        grad = x.T @ (q - y)
        hess = (x * (q * (1 - q))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.max(np.abs(step)) < NEWTON_TOL:
            break
    if not np.all(np.isfinite(theta)) or theta[0] < 0:
        rate = float(np.clip(y.mean(), P_MIN, 1 - P_MIN))
        return Calibration(method="platt", a=0.0, b=float(np.log(rate / (1 - rate))))
    return Calibration(method="platt", a=float(theta[0]), b=float(theta[1]))


def _pav(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted pool-adjacent-violators: the non-decreasing fit of ``values``."""
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        blocks.append([v * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, wt, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += wt
            blocks[-1][2] += c
    return np.concatenate([np.full(int(c), s / w) for s, w, c in blocks])


def fit_isotonic(p: np.ndarray, y: np.ndarray) -> Calibration:
    order = np.argsort(p, kind="stable")
    chunks = np.array_split(order, min(ISO_BINS, max(1, len(p) // 50)))
    x = np.array([p[c].mean() for c in chunks])
    rate = np.array([y[c].mean() for c in chunks])
    w = np.array([len(c) for c in chunks], dtype=np.float64)
    # equal scores across chunks (a model with few distinct outputs) become one knot
    ux, inv = np.unique(x, return_inverse=True)
    wu = np.bincount(inv, weights=w)
    ru = np.bincount(inv, weights=rate * w) / wu
    fitted = np.clip(_pav(ru, wu), P_MIN, 1 - P_MIN)
    return Calibration(method="isotonic", x=tuple(ux.tolist()), y=tuple(fitted.tolist()))


_FITTERS = {"platt": fit_platt, "isotonic": fit_isotonic}


def fit_calibration(p: np.ndarray, y: np.ndarray, hours: np.ndarray) -> Calibration:
    """The calibration of one horizon's validation ``p_up`` against labels ``y`` (NaN: unlabelled or not
    scored), chosen by cross-fitted log loss over alternate ``hours`` (each row's hour since the epoch;
    see the module's description)."""
    keep = ~(np.isnan(p) | np.isnan(y))
    p, y, hours = p[keep], y[keep], hours[keep]
    halves = (hours % 2).astype(bool)
    if len(p) < MIN_ROWS or y.min() == y.max() or halves.all() or not halves.any():
        return IDENTITY
    scores: dict[str, float] = {"identity": _log_loss(y, p)}
    for name, fit in _FITTERS.items():
        total = 0.0
        for train in (halves, ~halves):
            if y[train].min() == y[train].max():
                total = float("inf")
                break
            total += _log_loss(y[~train], calibrate(fit(p[train], y[train]), p[~train])) * (~train).sum()
        scores[name] = total / len(p)
    best = min(scores, key=lambda k: scores[k])
    rounded = {k: round(float(v), 6) for k, v in scores.items()}
    if best == "identity":
        return Calibration(val_log_loss=rounded)
    return msgspec.structs.replace(_FITTERS[best](p, y), val_log_loss=rounded)


def _bin_sums(p: np.ndarray, y: np.ndarray, days: np.ndarray, n_days: int) -> np.ndarray:
    """[3, days, bins]: rows, sum of p and sum of y per day and equal-width bin."""
    b = np.minimum((p * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    cell = days * ECE_BINS + b
    size = n_days * ECE_BINS
    return np.stack([np.bincount(cell, weights=w, minlength=size).reshape(n_days, ECE_BINS)
                     for w in (np.ones(len(p)), p, y)])  # fmt: skip


def reliability(p: np.ndarray, y: np.ndarray, days: np.ndarray, weights: np.ndarray
                ) -> tuple[dict[str, float | None], tuple[ReliabilityBin, ...]]:  # fmt: skip
    """``({"ece", "ece_lo", "ece_hi"}, reliability table)`` of one horizon's test ``p_up``; ``weights``:
    the evaluation's day resamplings [draws, days]."""
    keep = ~(np.isnan(p) | np.isnan(y))
    if not keep.any():
        return {"ece": None, "ece_lo": None, "ece_hi": None}, ()
    p, y, d = p[keep], y[keep], days[keep]
    sums = _bin_sums(p, y, d, weights.shape[1])
    n, sp, sy = sums.sum(axis=1)
    ece = float(np.abs(sy - sp).sum() / n.sum())
    dn, dp, dy = (weights @ sums[j] for j in range(3))  # [draws, bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        draws_ece = np.abs(dy - dp).sum(axis=1) / dn.sum(axis=1)
        draws_rate = dy / dn
    lo, hi = _bounds(draws_ece, d)
    table = []
    for b in np.flatnonzero(n):
        r_lo, r_hi = _bounds(draws_rate[:, b], d)
        table.append(ReliabilityBin(lo=int(b) / ECE_BINS, hi=(int(b) + 1) / ECE_BINS, rows=int(n[b]),
                                    mean_p=float(sp[b] / n[b]), rate=float(sy[b] / n[b]), rate_lo=r_lo,
                                    rate_hi=r_hi))  # fmt: skip
    return {"ece": ece, "ece_lo": lo, "ece_hi": hi}, tuple(table)
