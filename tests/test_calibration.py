"""Calibration maps: fitted on validation only, chosen without scoring a map on its own rows, applied
identically wherever probabilities are served, and measured (ECE, reliability) with day-block intervals."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from memed.models.manifest import Calibration, Manifest
from memed.models.registry import load_model_set
from memed.signals.calibration import P_MIN, calibrate, calibrate_columns, logit
from memed.trainers.calibration import ECE_BINS, fit_calibration, fit_isotonic, reliability
from memed.trainers.uncertainty import day_weights


def _sample(n: int, seed: int, squeeze: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores whose true probability is ``sigmoid(logit(p) / squeeze)``: squeeze < 1 is over-confident."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(0, 1.2, n)))
    true = 1 / (1 + np.exp(-logit(p) * squeeze))
    y = (rng.random(n) < true).astype(float)
    days = np.repeat(np.arange(20), n // 20 + 1)[:n]
    return p, y, days


def _ece(p: np.ndarray, y: np.ndarray) -> float:
    b = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    return float(sum(abs((y[b == k] - p[b == k]).sum()) for k in range(ECE_BINS)) / len(p))


@pytest.mark.parametrize("squeeze", [0.5, 2.0])
def test_a_miscalibrated_model_is_calibrated_on_fresh_rows(squeeze: float) -> None:
    p, y, days = _sample(20_000, 1, squeeze)
    cal = fit_calibration(p, y, days)
    assert cal.method in {"platt", "isotonic"}
    assert cal.val_log_loss[cal.method] < cal.val_log_loss["identity"]
    fresh_p, fresh_y, _ = _sample(20_000, 2, squeeze)
    before, after = _ece(fresh_p, fresh_y), _ece(calibrate(cal, fresh_p), fresh_y)
    assert before > 0.03
    assert after < 0.015


def test_a_calibrated_model_is_left_nearly_alone() -> None:
    p, y, days = _sample(20_000, 3, 1.0)
    cal = fit_calibration(p, y, days)
    fresh = np.linspace(0.05, 0.95, 19)
    assert np.max(np.abs(calibrate(cal, fresh) - fresh)) < 0.05


def test_a_map_never_reverses_the_ranking() -> None:
    """On validation rows where the model ranks backwards, the map goes flat (the base rate) instead of
    flipping the model: reversing a model is a modelling decision, not a calibration."""
    p, y, days = _sample(20_000, 7, -1.0)
    cal = fit_calibration(p, y, days)
    grid = np.linspace(0.01, 0.99, 50)
    assert np.all(np.diff(calibrate(cal, grid)) >= 0)
    if cal.method == "platt":
        assert cal.a == 0.0


def test_too_little_or_one_class_gives_identity() -> None:
    p, y, days = _sample(100, 4, 0.5)
    assert fit_calibration(p, y, days).method == "identity"
    assert fit_calibration(p, np.ones(100), days).method == "identity"
    p, y, _ = _sample(5_000, 4, 0.5)
    assert fit_calibration(p, y, np.zeros(5_000, dtype=int)).method == "identity"  # one hour: no halves


def test_maps_keep_nan_bounds_and_order() -> None:
    p, y, _ = _sample(20_000, 5, 0.5)
    iso = fit_isotonic(p, y)
    assert np.all(np.diff(iso.y) >= 0)
    assert len(iso.x) <= 100
    grid = np.array([np.nan, 0.0, 1e-12, 0.3, 0.5, 0.7, 1.0])
    for cal in (iso, Calibration(method="platt", a=3.0, b=-0.2)):
        out = calibrate(cal, grid)
        assert np.isnan(out[0])
        assert np.all((out[1:] >= P_MIN) & (out[1:] <= 1 - P_MIN))
        assert np.all(np.diff(out[1:]) >= 0)
    two = np.column_stack([grid, grid])
    both = calibrate_columns((Calibration(), iso), two)
    assert np.array_equal(both[:, 0], grid, equal_nan=True)
    assert calibrate_columns((), two) is two


def test_reliability_table_and_ece_by_hand() -> None:
    p, y, days = _sample(8_000, 6, 0.5)
    w = day_weights(20, seed=0)
    ece, table = reliability(p, y, days, w)
    assert ece["ece"] == pytest.approx(_ece(p, y))
    assert ece["ece_lo"] is not None
    assert ece["ece_hi"] is not None
    assert ece["ece_lo"] <= ece["ece"] <= ece["ece_hi"]
    assert sum(b.rows for b in table) == len(p)
    for b in table:
        inside = (p >= b.lo) & ((p < b.hi) | (b.hi == 1.0))
        assert b.rows == inside.sum()
        assert b.rate == pytest.approx(y[inside].mean())
        assert b.rate_lo is not None
        assert b.rate_hi is not None
        assert b.rate_lo <= b.rate <= b.rate_hi


def test_a_trained_set_records_calibration_and_serves_it(tiny_registry: Path) -> None:
    ms = load_model_set(tiny_registry)
    m = ms.manifest
    for e in m.models:
        assert len(e.calibration) == len(m.horizons)
        for c in e.calibration:
            assert set(c.val_log_loss) == {"identity", "platt", "isotonic"}
            assert c.val_log_loss[c.method] == min(c.val_log_loss.values())
        for h in map(str, m.horizons):
            assert {"ece", "ece_lo", "ece_hi", "ece_uncalibrated"} <= set(e.metrics[h])
            assert e.reliability[h]
    assert m.ensemble_models
    assert set(m.ensemble) == {str(h) for h in m.horizons}
    # a manifest written before calibration existed reads as identity maps
    old = msgspec.json.decode(msgspec.json.encode(m), type=dict)
    for e in old["models"]:
        del e["calibration"]
    assert all(e.calibration == () for e in msgspec.convert(old, Manifest).models)
