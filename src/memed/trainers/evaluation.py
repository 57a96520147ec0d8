"""Test-split evaluation that cannot flatter: every metric with a day-block interval, every model beside
a trivially fitted baseline with a paired interval, and warnings for figures too good to trust."""

from __future__ import annotations

import numpy as np

from memed.models.manifest import Metrics, ReliabilityBin
from memed.trainers.calibration import reliability
from memed.trainers.metrics import binary_metrics
from memed.trainers.uncertainty import DRAWS, day_weights, intervals, paired_difference

FITTED = "fitted_logistic"
"""The baseline every family must beat: a 2-feature logistic regression fit on the same training rows."""
LEAK_AUC = 0.60
"""On real minute data good direction models reach AUC 0.52-0.58: above this is a leak until proven
otherwise."""
LEAK_MARGIN = 0.05
"""Beating the better of the fitted baseline and chance by more than this much AUC is suspicious too."""
LEAK_MIN_ROWS = 500
"""Rows a metric needs before the warnings apply."""


class Evaluation:
    """Metrics per horizon on one test split: labels ``y`` [rows, H], each row's calendar day, the fitted
    baseline's probabilities, and one set of day resamplings shared by every model and baseline (so
    their intervals and differences are paired)."""

    def __init__(self, y: np.ndarray, days: np.ndarray, horizons: list[int], fitted: np.ndarray,
                 *, draws: int = DRAWS, seed: int = 0) -> None:  # fmt: skip
        self.y = y
        self.days = days
        self.horizons = horizons
        self.fitted = fitted
        self.weights = day_weights(int(days.max()) + 1 if len(days) else 1, draws, seed)

    def metrics(self, p: np.ndarray, *, versus_fitted: bool = False, uncalibrated: np.ndarray | None = None
                ) -> dict[str, Metrics]:  # fmt: skip
        """Horizon (minutes, as text) → metrics of ``p`` [rows, H] with their intervals; with
        ``versus_fitted``, the paired AUC difference against the fitted baseline too; with
        ``uncalibrated`` (the same model before its calibration map), the expected calibration error of
        both (``ece`` with its interval, ``ece_uncalibrated``)."""
        out: dict[str, Metrics] = {}
        for k, h in enumerate(self.horizons):
            y, pk = self.y[:, k], p[:, k]
            m = binary_metrics(y, pk) | intervals(y, pk, self.days, self.weights)
            if versus_fitted:
                m |= paired_difference(y, pk, self.fitted[:, k], self.days, self.weights, FITTED)
            if uncalibrated is not None:
                m |= reliability(pk, y, self.days, self.weights)[0]
                m["ece_uncalibrated"] = reliability(uncalibrated[:, k], y, self.days, self.weights)[0]["ece"]
            out[str(h)] = m
        return out

    def reliability(self, p: np.ndarray) -> dict[str, tuple[ReliabilityBin, ...]]:
        """Horizon → the reliability table of ``p`` [rows, H] (10 bins, day-block intervals)."""
        return {str(h): reliability(p[:, k], self.y[:, k], self.days, self.weights)[1]
                for k, h in enumerate(self.horizons)}  # fmt: skip


def excess(auc: float | None, fitted_auc: float | None) -> float:
    """How far an AUC lies above the better of the fitted baseline's and chance (0.5): a baseline that
    is worse than chance on a test period (it happens, by noise or a regime flip) does not make a model at
    chance look too good."""
    if auc is None or fitted_auc is None or np.isnan(auc) or np.isnan(fitted_auc):
        return float("nan")
    return float(auc - max(fitted_auc, 0.5))


def too_good(auc: float | None, fitted_auc: float | None, rows: float | None) -> list[str]:
    """What is too good to trust in one AUC (the one tripwire of training and backtest): above
    :data:`LEAK_AUC`, or more than :data:`LEAK_MARGIN` above the better of the fitted baseline's and
    chance (:func:`excess`), on more than :data:`LEAK_MIN_ROWS` rows."""
    if not (rows or 0) > LEAK_MIN_ROWS:
        return []
    out = []
    if auc is not None and not np.isnan(auc) and auc > LEAK_AUC:
        out.append(f"ROC AUC {auc:.3f} > {LEAK_AUC}")
    over = excess(auc, fitted_auc)
    if over > LEAK_MARGIN:
        better = "the better of the fitted 2-feature logistic and chance"
        out.append(f"ROC AUC {over:+.3f} over {better} (> {LEAK_MARGIN})")
    return out


def suspicious(name: str, metrics: dict[str, Metrics]) -> list[str]:
    """:func:`too_good` for each horizon of a model's test metrics (from the manifest, where the fitted
    baseline's AUC is the model's minus ``roc_auc_vs_fitted_logistic``)."""
    out = []
    for h, m in metrics.items():
        auc, gain = m.get("roc_auc"), m.get(f"roc_auc_vs_{FITTED}")
        fitted = auc - gain if auc is not None and gain is not None else None
        problems = too_good(auc, fitted, m.get("n"))
        out += [f"{name} horizon {h}: test {p}: a leak until proven otherwise" for p in problems]
    return out
