"""Day-block bootstrap intervals and paired differences (trainers/uncertainty.py)."""

from __future__ import annotations

import numpy as np

from memed.trainers.evaluation import suspicious
from memed.trainers.metrics import binary_metrics, roc_auc
from memed.trainers.uncertainty import _Scores, day_index, day_weights, intervals, paired_difference


def _days_market(days: int, rows_per_day: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and scores whose skill varies strongly from day to day (as market regimes do)."""
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(days), rows_per_day)
    skill = rng.normal(0.0, 1.0, days)[day]
    y = (rng.random(len(day)) < 0.5).astype(float)
    p = 1.0 / (1.0 + np.exp(-(rng.normal(0, 1, len(day)) + skill * (y - 0.5))))
    return y, np.round(p, 2), day  # rounded: many tied scores


def test_weighted_metrics_with_unit_weights_equal_the_plain_ones() -> None:
    y, p, _ = _days_market(5, 300, seed=1)
    got = _Scores.of(p).metrics(y, np.ones(len(y)))
    want = binary_metrics(y, p)
    assert abs(got["roc_auc"] - roc_auc(y, p)) < 1e-12
    for k in ("log_loss", "brier", "accuracy"):
        assert abs(got[k] - want[k]) < 1e-12, k  # type: ignore[operator]


def test_day_blocks_give_wider_intervals_than_rows_would() -> None:
    y, p, day = _days_market(20, 500, seed=2)
    by_day = intervals(y, p, day, day_weights(20, seed=0))
    rows = np.arange(len(y))  # every row its own "day": the naive bootstrap
    by_row = intervals(y, p, rows, day_weights(len(y), draws=200, seed=0))
    auc = roc_auc(y, p)
    assert by_day["roc_auc_lo"] < auc < by_day["roc_auc_hi"]  # type: ignore[operator]
    width = by_day["roc_auc_hi"] - by_day["roc_auc_lo"]  # type: ignore[operator]
    assert width > 2 * (by_row["roc_auc_hi"] - by_row["roc_auc_lo"])  # type: ignore[operator]


def test_paired_differences_cancel_shared_noise() -> None:
    y, p, day = _days_market(15, 400, seed=3)
    w = day_weights(15, seed=1)
    same = paired_difference(y, p, p, day, w, "self")
    assert same == {"roc_auc_vs_self": 0.0, "roc_auc_vs_self_lo": 0.0, "roc_auc_vs_self_hi": 0.0}
    better = np.clip(p + 0.3 * (y - 0.5), 0, 1)
    diff = paired_difference(y, better, p, day, w, "base")
    assert diff["roc_auc_vs_base_lo"] > 0  # type: ignore[operator]
    assert day_index(np.array([0.0, 1439.0, 1440.0, 5000.0])).tolist() == [0, 0, 1, 2]


def test_suspicious_metrics_are_named() -> None:
    ok = {"60": {"n": 10_000.0, "roc_auc": 0.55, "roc_auc_vs_fitted_logistic": 0.01}}
    assert suspicious("lgbm", ok) == []
    leak = {"60": {"n": 10_000.0, "roc_auc": 0.66, "roc_auc_vs_fitted_logistic": 0.09}}
    got = suspicious("lgbm", leak)
    assert len(got) == 2
    assert all("lgbm horizon 60" in w for w in got)
    assert suspicious("lgbm", {"60": {"n": 100.0, "roc_auc": 0.9}}) == []  # too few rows to judge
    # a fitted baseline worse than chance does not make a model at chance look too good
    at_chance = {"60": {"n": 10_000.0, "roc_auc": 0.49, "roc_auc_vs_fitted_logistic": 0.15}}
    assert suspicious("lgbm", at_chance) == []


def test_the_fitted_baseline_is_the_logistic_family_on_two_features() -> None:
    """Newton's method in numpy (no SciPy: the backtester fits it on a serving-only install) reaches the
    logistic family's own optimum (SciPy's L-BFGS) on the same two standardised features."""
    from memed.config import LogregConfig
    from memed.trainers.baseline import FittedBaseline, baseline_features
    from memed.trainers.tabular import train_logreg

    rng = np.random.default_rng(4)
    x = np.column_stack([rng.normal(0, 0.01, 5000), rng.uniform(20, 80, 5000)])
    logit = 40 * x[:, 0] - 0.02 * (x[:, 1] - 50)
    y = np.column_stack([(rng.random(5000) < 1 / (1 + np.exp(-logit))).astype(float), np.full(5000, 1.0)])
    y[::7, 0] = np.nan  # unknown labels are left out
    names = ["logret_5m", "logret_15m", "rsi_14"]
    assert baseline_features(names) == ("logret_15m", "rsi_14")
    assert baseline_features(["logret_60m", "rsi_14"]) == ("logret_60m", "rsi_14")
    fitted = FittedBaseline.fit(("logret_15m", "rsi_14"), x, y, l2=1.0)
    reference = train_logreg(x, y, x, LogregConfig(l2=1.0, max_iter=500), "reference").native_test
    got = fitted.predict(x)
    assert np.max(np.abs(got[:, 0] - reference[:, 0])) < 1e-4  # L-BFGS stops at its own tolerance
    assert np.allclose(got[:, 1], got[0, 1])  # one class only: a constant at the base rate


def test_all_draws_at_once_equal_one_draw_at_a_time() -> None:
    y, p, day = _days_market(12, 700, seed=6)
    w = day_weights(12, draws=50, seed=3)
    s = _Scores.of(p)
    at_once = s.over_draws(y, day, w)
    for k, wd in enumerate(w):
        one = s.metrics(y, wd[day])
        for m, v in one.items():
            assert abs(at_once[m][k] - v) < 1e-12, (m, k)
