"""Correctness against independent oracles: TA-Lib for the classic indicators, numpy for the rest."""

import numpy as np
import polars as pl
import pytest
import talib

from conftest import real_bars
from memed.data import infer_interval_minutes
from memed.features import build_spec, compute_features


def _series(name: str, token_index: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    bars = real_bars(name)
    token = sorted(bars["token"].unique().to_list())[token_index]
    one = bars.filter(pl.col("token") == token)
    return one, compute_features(one, build_spec(infer_interval_minutes(one), 15))


def _check(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-6, atol: float = 0.0) -> None:
    both = ~np.isnan(ref) & ~np.isnan(ours)
    assert both.sum() > 1000
    # past memed's warm-up (the seeded averages' convergence horizon) memed has a value wherever TA-Lib has
    warm = build_spec(1, 15).warmup_bars
    assert not (np.isnan(ours[warm:]) & ~np.isnan(ref[warm:])).any()
    np.testing.assert_allclose(ours[both], ref[both], rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    ("dataset", "token"), [("binance-futures-1m", 0), ("binance-futures-1m", 1), ("binance-spot-5m", 2)]
)
def test_classic_indicators_equal_talib(dataset: str, token: int) -> None:
    one, f = _series(dataset, token)
    o, h, lo, c, v = (one[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    col = lambda name: f[name].to_numpy().astype(float)  # noqa: E731
    _check(col("rsi_14"), talib.RSI(c, 14), atol=1e-9)  # 0..100 oscillators: absolute floor for 0 vs 1e-13
    # price-level indicators are served per close (scale-free): times the close they are TA-Lib's
    _check(col("atr_pct_14") * c, talib.ATR(h, lo, c, 14))
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    _check(col("macd_pct") * c, macd, atol=1e-12 * np.nanmax(np.abs(c)))
    _check(col("macd_signal_pct") * c, signal, atol=1e-12 * np.nanmax(np.abs(c)))
    _check(col("macd_hist_pct") * c, hist, atol=1e-12 * np.nanmax(np.abs(c)))
    upper, _, lower = talib.BBANDS(c, 20, 2, 2, 0)
    _check((col("bb_upper_dist_20") + 1) * c, upper)
    _check((col("bb_lower_dist_20") + 1) * c, lower)
    fastk, fastd = talib.STOCHF(h, lo, c, 14, 3, 0)
    flat = talib.MAX(h, 14) == talib.MIN(lo, 14)  # memed's flat convention differs there, on purpose
    flat_d = np.convolve(flat.astype(float), np.ones(3), "full")[: len(flat)] > 0
    _check(np.where(flat, np.nan, col("stoch_k_14")), fastk, atol=1e-9)
    _check(np.where(flat_d, np.nan, col("stoch_d_14")), fastd, atol=1e-9)
    _check(np.where(flat, np.nan, col("willr_14")), talib.WILLR(h, lo, c, 14), atol=1e-9)
    _check(col("cci_20"), talib.CCI(h, lo, c, 20), atol=1e-6)
    # net volume (OBV's rolling, start-free form): over w bars, up-bar volume minus down-bar volume, per
    # the window's volume; OBV's increments are exactly those signed volumes
    w = 30 if dataset.endswith("1m") else 6
    step = np.diff(talib.OBV(c, v))
    signed = np.convolve(step, np.ones(w), "valid")
    total = np.convolve(v[1:], np.ones(w), "valid")
    ref = np.full(len(c), np.nan)
    ref[w:] = np.where(total > 0, signed / np.where(total > 0, total, 1.0), 0.0)
    _check(col("net_volume_30m"), ref, rtol=1e-9, atol=1e-12)
    del o


def test_seeded_averages_are_served_from_their_convergence_horizon() -> None:
    """Seeded as TA-Lib seeds them (equal to TA-Lib wherever both have a value), but null until the seed's
    weight has decayed below the spec's bound: before that the value depends on where history started."""
    one, f = _series("binance-futures-1m")
    c = one["close"].to_numpy()
    macd, _, _ = talib.MACD(c, 12, 26, 9)
    spec = build_spec(1, 15)
    warm = {d.name: d.warmup for d in spec.features}
    assert warm["macd_pct"] == 26 + 270 and warm["rsi_14"] == 15 + 187  # noqa: PT018
    for name in ("rsi_9", "rsi_14", "atr_pct_14", "macd_pct", "macd_signal_pct", "macd_hist_pct"):
        assert f[name][: warm[name] - 1].null_count() == warm[name] - 1, name
        assert f[name][warm[name] - 1] is not None, name
    k = warm["macd_pct"] - 1
    assert f["macd_pct"][k] * c[k] == pytest.approx(macd[k], rel=1e-12)


def test_flat_stretch_conventions() -> None:
    """Where a window is flat TA-Lib writes 0; memed writes the neutral value. Pinned here."""
    t0 = pl.datetime(2026, 1, 1, time_zone="UTC")
    n = 320
    bars = pl.DataFrame({"token": ["F"] * n, "k": list(range(n))}).select(
        "token",
        ts=pl.select(t0).item() + pl.duration(minutes=pl.col("k")),
        open=pl.lit(2e-9), high=pl.lit(2e-9), low=pl.lit(2e-9), close=pl.lit(2e-9), volume=pl.lit(0.0),
    )  # fmt: skip
    last = compute_features(bars, build_spec(1, 15)).row(-1, named=True)
    assert last["rsi_14"] == 50.0
    assert last["stoch_k_14"] == 50.0
    assert last["stoch_d_14"] == 50.0
    assert last["willr_14"] == -50.0
    assert last["bb_pctb_20"] == 0.5
    assert last["cci_20"] == 0.0
    assert last["zscore_60m"] == 0.0
    assert last["ret_std_60m"] == 0.0
    assert last["ret_skew_60m"] == 0.0
    assert last["volume_ratio_30m"] == 0.0
    assert last["fft_low_share_64m"] == 0.0
    assert last["var_95_60m"] == 0.0
    assert last["bb_upper_dist_20"] == last["bb_lower_dist_20"] == 0.0
    assert last["net_volume_30m"] == 0.0  # no volume traded: neutral
    c = bars["close"].to_numpy()
    assert talib.RSI(c, 14)[-1] == 0.0
    assert talib.STOCHF(c, c, c, 14, 3, 0)[0][-1] == 0.0


def test_window_statistics_equal_numpy() -> None:
    one, f = _series("binance-futures-1m")
    c = one["close"].to_numpy()
    r = np.diff(np.log(c))
    i = np.arange(200, 5000, 37)
    for w in (5, 15, 60):
        np.testing.assert_allclose(f[f"logret_{w}m"].to_numpy()[i], np.log(c[i] / c[i - w]), rtol=1e-9)
        win = np.stack([r[k - w : k] for k in i])  # returns ending at bar k
        np.testing.assert_allclose(f[f"ret_mean_{w}m"].to_numpy()[i], win.mean(1), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(f[f"ret_std_{w}m"].to_numpy()[i], win.std(1), rtol=1e-6)
        cw = np.stack([c[k - w + 1 : k + 1] for k in i])
        z = (c[i] - cw.mean(1)) / cw.std(1)
        np.testing.assert_allclose(f[f"zscore_{w}m"].to_numpy()[i], z, rtol=1e-6, atol=1e-6)
    win = np.stack([r[k - 60 : k] for k in i])
    d = win - win.mean(1, keepdims=True)
    m2 = (d**2).mean(1)
    np.testing.assert_allclose(
        f["ret_skew_60m"].to_numpy()[i], (d**3).mean(1) / m2**1.5, rtol=1e-6, atol=1e-8
    )
    np.testing.assert_allclose(
        f["ret_kurt_60m"].to_numpy()[i], (d**4).mean(1) / m2**2 - 3, rtol=1e-6, atol=1e-8
    )
    np.testing.assert_allclose(f["var_95_60m"].to_numpy()[i], -np.quantile(win, 0.05, axis=1), rtol=1e-12)
    spec64 = np.stack([np.fft.fft(r[k - 64 : k]) for k in i])
    energy = np.abs(spec64) ** 2
    ac = energy[:, 1:].sum(1)
    np.testing.assert_allclose(
        f["fft_low_share_64m"].to_numpy()[i], 2 * energy[:, 1:5].sum(1) / ac, rtol=1e-7
    )
    np.testing.assert_allclose(
        f["fft_nyquist_share_64m"].to_numpy()[i], energy[:, 32] / ac, rtol=1e-6, atol=1e-12
    )
    np.testing.assert_allclose(
        f["accel_5m"].to_numpy()[i],
        np.log(c[i] / c[i - 5]) - np.log(c[i - 5] / c[i - 10]),
        rtol=1e-7,
        atol=1e-12,
    )
    assert "age_minutes" not in f.columns  # a dataset clock: gone (see test_start_truncation_...)
    assert "minute_sin" not in f.columns  # minute of day did not earn its place on validation (README)


def test_windows_shorter_than_the_bar_are_absent() -> None:
    hourly = build_spec(60, 15)
    assert "logret_60m" in hourly.names
    assert not {"logret_1m", "logret_15m", "ret_std_60m", "zscore_5m", "fft_low_share_64m"} & set(
        hourly.names
    )
    five = build_spec(5, 15)
    assert "logret_1m" not in five.names
    assert "ret_std_15m" in five.names
    assert next(f for f in five.features if f.name == "ret_std_15m").params["window_bars"] == 3
    assert "rsi_14" in hourly.names
    assert "rsi_14" in five.names
