"""The fitted baseline: a logistic regression on two features (a short log return and RSI(14)), fit per
horizon on the same training rows as the models — the trivially fitted model every family must beat.

Numpy only (Newton's method on three parameters, standardised inputs, the same L2 penalty per row as the
logistic family), so the trainers and the backtester (a serving-only install included) fit it alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memed.models.scaler import Scaler

FEATURE_CHOICES = (("logret_15m", "logret_30m", "logret_60m"), ("rsi_14",))
"""Its inputs: the shortest of these log returns the spec has (an hourly spec has no 15-minute one), and
RSI(14)."""
NEWTON_STEPS = 25
MIN_ROWS = 50
CONVERGED = 1e-10
"""Newton stops once no parameter moves more than this."""


def baseline_features(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The two features the fitted baseline uses for a spec with these ``names``."""
    return tuple(next(n for n in options if n in names) for options in FEATURE_CHOICES)


def _fit_one(z: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Weights and bias (last) of an L2-penalised logistic regression by Newton's method."""
    n = len(y)
    x = np.column_stack([z, np.ones(n)])
    theta = np.zeros(x.shape[1])
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    theta[-1] = np.log(rate / (1 - rate))
    penalty = np.full(x.shape[1], l2 / n)
    penalty[-1] = 0.0
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (p - y) / n + penalty * theta
        hess = (x * (p * (1 - p))[:, None]).T @ x / n + np.diag(penalty)
        step = np.linalg.solve(hess + 1e-12 * np.eye(len(theta)), grad)
        theta -= step
        if np.max(np.abs(step)) < CONVERGED:
            break
    return theta


@dataclass(frozen=True)
class FittedBaseline:
    features: tuple[str, ...]
    scaler: Scaler
    theta: np.ndarray
    """[horizons, 3]: two weights and a bias per horizon (a constant at the base rate where a horizon has
    fewer than ``MIN_ROWS`` labels or one class)."""

    @classmethod
    def fit(cls, features: tuple[str, ...], x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> FittedBaseline:
        """``x`` [rows, 2] the two features, ``y`` [rows, H] labels (NaN: unknown)."""
        scaler = Scaler.fit(x)
        z = scaler.transform(x)
        theta = np.zeros((y.shape[1], x.shape[1] + 1))
        for k in range(y.shape[1]):
            have = ~np.isnan(y[:, k])
            yk = y[have, k]
            if len(yk) < MIN_ROWS or yk.min() == yk.max():
                rate = float(np.clip(yk.mean() if len(yk) else 0.5, 1e-6, 1 - 1e-6))
                theta[k, -1] = np.log(rate / (1 - rate))
            else:
                theta[k] = _fit_one(z[have], yk, l2)
        return cls(features, scaler, theta)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``p_up`` [rows, H] for ``x`` [rows, 2]."""
        z = self.scaler.transform(x)
        margin = z @ self.theta[:, :-1].T + self.theta[:, -1]
        p: np.ndarray = 1.0 / (1.0 + np.exp(-margin))
        return p
