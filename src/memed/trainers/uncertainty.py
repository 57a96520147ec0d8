"""Day-block bootstrap intervals, and paired differences against a baseline on the same resampled days.

Minutes and tokens are strongly correlated (one token's consecutive minutes; every token's minutes in
one market hour), so resampling rows would give intervals far too narrow. Here the unit is the calendar
day holding every token's rows: each draw resamples whole days with replacement, i.e. gives each day a
multiplicity weight, and every metric is computed with those row weights. A paired difference (model
minus baseline) uses the same weights for both in each draw, so the day-to-day noise they share cancels.

Weighted ROC AUC is computed from one sort of the scores: per draw only a weighted count per tie group,
so 200 draws over 10^5 rows cost well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memed.trainers.metrics import DECISION_P

DRAWS = 200
LEVEL = 0.95
_EPS = 1e-15
INTERVAL_METRICS = ("roc_auc", "log_loss", "brier", "accuracy")
MIN_DAYS = 2
MAX_DAYS = 2_000
"""Most days resampled through the days x days matrix (32 MB); more fall back to one draw at a time."""
MAX_CELLS = 8_000_000
"""Largest days x tie groups aggregated at once (64 MB of float64)."""


def day_index(ts_minutes: np.ndarray) -> np.ndarray:
    """Each row's calendar day (UTC) as a dense code 0 .. days-1."""
    _, codes = np.unique(np.floor(np.asarray(ts_minutes) / 1440.0), return_inverse=True)
    return codes.astype(np.int64)


def day_weights(days: int, draws: int = DRAWS, seed: int = 0) -> np.ndarray:
    """[draws, days] multiplicities: each draw picks ``days`` days with replacement."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, days, size=(draws, days))
    out = np.zeros((draws, days))
    np.add.at(out, (np.repeat(np.arange(draws), days), picks.ravel()), 1.0)
    return out


@dataclass(frozen=True)
class _Scores:
    """One probability vector prepared for weighted metrics: its tie groups in ascending order."""

    p: np.ndarray
    group: np.ndarray
    groups: int
    log_p: np.ndarray
    log_q: np.ndarray
    up: np.ndarray  # p >= DECISION_P

    @classmethod
    def of(cls, p: np.ndarray) -> _Scores:
        uniq, group = np.unique(p, return_inverse=True)
        pc = np.clip(p, _EPS, 1 - _EPS)
        return cls(p, group.astype(np.int64), len(uniq), np.log(pc), np.log(1 - pc), p >= DECISION_P)

    def metrics(self, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
        """Every interval metric with row weights ``w`` (NaN AUC when a class has no weight)."""
        wp, wn = w * y, w * (1.0 - y)
        pos = np.bincount(self.group, weights=wp, minlength=self.groups)
        neg = np.bincount(self.group, weights=wn, minlength=self.groups)
        tp, tn = pos.sum(), neg.sum()
        below = np.cumsum(neg) - neg
        auc = float((pos * (below + 0.5 * neg)).sum() / (tp * tn)) if tp > 0 and tn > 0 else float("nan")
        total = w.sum()
        if total <= 0:  # the draw picked no day with these rows
            return dict.fromkeys(INTERVAL_METRICS, float("nan"))
        ll = -(wp @ self.log_p + wn @ self.log_q) / total
        brier = (w @ (self.p - y) ** 2) / total
        acc = (w @ (self.up == (y == 1))) / total
        return {"roc_auc": auc, "log_loss": float(ll), "brier": float(brier), "accuracy": float(acc)}

    def over_draws(self, y: np.ndarray, days: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every interval metric for each draw of day ``weights`` [draws, days], at once. A draw's row
        weights depend only on the row's day, so counts per (day, tie group) are summed once and each draw
        is a weighted sum of them (a matrix product); per-draw loops are kept for very many days x groups."""
        n_days = weights.shape[1]
        if n_days * self.groups > MAX_CELLS or n_days > MAX_DAYS:
            per = [self.metrics(y, wd[days]) for wd in weights]
            return {m: np.array([d[m] for d in per]) for m in INTERVAL_METRICS}
        cell = days * self.groups + self.group
        size = n_days * self.groups
        pos = np.bincount(cell, weights=y, minlength=size).reshape(n_days, self.groups)
        neg = np.bincount(cell, weights=1.0 - y, minlength=size).reshape(n_days, self.groups)
        per_day = {
            "n": np.bincount(days, minlength=n_days).astype(np.float64),
            "ll": np.bincount(days, weights=y * self.log_p + (1 - y) * self.log_q, minlength=n_days),
            "brier": np.bincount(days, weights=(self.p - y) ** 2, minlength=n_days),
            "acc": np.bincount(days, weights=(self.up == (y == 1)).astype(np.float64), minlength=n_days),
        }
        # a draw's AUC numerator sum_g pos_g (neg below g + neg_g / 2) is bilinear in its day weights:
        # w' A w with A[d, e] = sum_g P[d, g] (N[e, below g] + N[e, g] / 2), one small matrix for all draws
        neg_below = np.cumsum(neg, axis=1) - 0.5 * neg
        pair = pos @ neg_below.T  # [days, days]
        tp, tn = weights @ pos.sum(axis=1), weights @ neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = np.where(
                (tp > 0) & (tn > 0), np.einsum("kd,de,ke->k", weights, pair, weights) / (tp * tn), np.nan
            )
        total = weights @ per_day["n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "roc_auc": auc,
                "log_loss": np.where(total > 0, -(weights @ per_day["ll"]) / total, np.nan),
                "brier": np.where(total > 0, (weights @ per_day["brier"]) / total, np.nan),
                "accuracy": np.where(total > 0, (weights @ per_day["acc"]) / total, np.nan),
            }


def _labelled(y: np.ndarray, *ps: np.ndarray) -> np.ndarray:
    keep: np.ndarray = ~np.isnan(y)
    for p in ps:
        keep &= ~np.isnan(p)
    return keep


def _bounds(values: np.ndarray, days: np.ndarray) -> tuple[float | None, float | None]:
    """The interval of the draws' ``values``; unknown (None) when the rows span fewer than
    :data:`MIN_DAYS` days (resampling one day only repeats it) or too few draws are finite."""
    values = values[np.isfinite(values)]
    if len(np.unique(days)) < MIN_DAYS or len(values) < MIN_DAYS:
        return None, None
    lo, hi = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def intervals(y: np.ndarray, p: np.ndarray, days: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    """``<metric>_lo`` / ``<metric>_hi`` of each interval metric over the day-resampling ``weights``
    ([draws, days], from :func:`day_weights`); rows where ``y`` or ``p`` is NaN are left out."""
    keep = _labelled(y, p)
    if not keep.any():
        return {f"{m}_{b}": None for m in INTERVAL_METRICS for b in ("lo", "hi")}
    s, yk, dk = _Scores.of(p[keep]), y[keep], days[keep]
    draws = s.over_draws(yk, dk, weights)
    out: dict[str, float | None] = {}
    for m in INTERVAL_METRICS:
        out[f"{m}_lo"], out[f"{m}_hi"] = _bounds(draws[m], dk)
    return out


def paired_difference(
    y: np.ndarray, p: np.ndarray, base: np.ndarray, days: np.ndarray, weights: np.ndarray, name: str
) -> dict[str, float | None]:
    """ROC AUC of ``p`` minus that of ``base`` on the rows both score: the point difference
    (``roc_auc_vs_<name>``) and its paired day-block interval (``..._lo``, ``..._hi``)."""
    keep = _labelled(y, p, base)
    key = f"roc_auc_vs_{name}"
    if not keep.any():
        return {key: None, f"{key}_lo": None, f"{key}_hi": None}
    sm, sb, yk, dk = _Scores.of(p[keep]), _Scores.of(base[keep]), y[keep], days[keep]
    ones = np.ones(len(yk))
    point = sm.metrics(yk, ones)["roc_auc"] - sb.metrics(yk, ones)["roc_auc"]
    diffs = sm.over_draws(yk, dk, weights)["roc_auc"] - sb.over_draws(yk, dk, weights)["roc_auc"]
    lo, hi = _bounds(diffs, dk)
    return {key: float(point) if np.isfinite(point) else None, f"{key}_lo": lo, f"{key}_hi": hi}
