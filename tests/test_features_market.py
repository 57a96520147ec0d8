"""The market context features: their definition on hand-made minutes, stream = batch = history driver on
real data, start invariance from the data's start, snapshots, and a model set trained on them replayed
in bulk exactly as the daemon's minute loop decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import real_bars
from memed.config import parse_config
from memed.data import synth_market
from memed.data.schema import conform, infer_interval_minutes
from memed.decision import DecisionPath
from memed.decision.history import BlockFeatures, history_rows, plan_blocks
from memed.errors import ConfigError
from memed.features import FeatureStream, build_spec, compute_features, stream_features
from memed.features.spec import MARKET_FEATURES
from memed.models.registry import load_model_set
from memed.trainers.leakage import check_start_invariance
from memed.trainers.run import train_model_set

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _bars(closes: dict[str, np.ndarray]) -> pl.DataFrame:
    frames = [
        pl.DataFrame({"token": [tok] * len(c), "ts": [T0 + timedelta(minutes=i) for i in range(len(c))],
                      "open": c, "high": c, "low": c, "close": c, "volume": np.ones(len(c))})
        for tok, c in closes.items()
    ]  # fmt: skip
    return conform(pl.concat(frames)).sort("token", "ts")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def test_market_features_by_their_definition() -> None:
    """Three tokens: A moves with the market at twice its size, B is the market's own noise, C is flat.
    Checked against the module's stated formulas, computed here independently with numpy."""
    rng = np.random.default_rng(3)
    n = 400
    m = rng.normal(0, 0.01, n)
    closes = {"A": np.exp(np.cumsum(2 * m)), "B": np.exp(np.cumsum(m + rng.normal(0, 0.002, n))),
              "C": np.full(n, 5.0)}  # fmt: skip
    spec = build_spec(1, 15, market=True)
    feats = compute_features(_bars(closes), spec)
    r = {t: np.r_[np.nan, np.diff(np.log(c))] for t, c in closes.items()}
    rm = np.vstack(list(r.values())).mean(axis=0)  # equal weight over the tokens with a return (all, t > 0)
    settle = 16  # (max_fill_bars + 1) x 1 minute
    t = 300
    a = feats.filter(pl.col("token") == "A").row(t, named=True)
    assert a["mkt_ret_15m"] == pytest.approx(rm[t - 14 : t + 1].sum(), rel=1e-12)
    assert a["mkt_ret_60m"] == pytest.approx(rm[t - 59 : t + 1].sum(), rel=1e-12)
    ups = sum(int((r[k][t - 14 : t + 1] > 0).sum()) for k in r)
    downs = sum(int((r[k][t - 14 : t + 1] < 0).sum()) for k in r)
    assert downs > 0
    assert a["mkt_breadth_15m"] == pytest.approx(ups / (ups + downs))  # C never moves: not counted
    ri, mm = r["A"][t - 59 : t + 1], rm[t - 59 : t + 1]
    beta = np.cov(ri, mm, bias=True)[0, 1] / np.var(mm)
    assert a["mkt_beta_60m"] == pytest.approx(beta, rel=1e-9)
    resid = ri[-15:].sum() - beta * mm[-15:].sum()
    assert a["mkt_resid_15m"] == pytest.approx(resid, rel=1e-9, abs=1e-15)
    # every token sees the same market; the flat token has beta 0 against a moving market
    c = feats.filter(pl.col("token") == "C").row(t, named=True)
    assert c["mkt_ret_15m"] == a["mkt_ret_15m"]
    assert c["mkt_beta_60m"] == 0.0
    # nothing before the market's windows are settled, nothing before a token's beta window is full
    first = feats.filter(pl.col("token") == "A")
    assert first["mkt_ret_60m"].head(60 + settle).is_null().all()
    assert first["mkt_ret_60m"].slice(60 + settle).is_not_null().all()
    assert first["mkt_beta_60m"].head(settle + 60).is_null().all()
    assert first["mkt_beta_60m"].slice(settle + 61).is_not_null().all()


def test_a_flat_market_has_neutral_values() -> None:
    spec = build_spec(1, 15, market=True)
    feats = compute_features(_bars({"A": np.full(200, 1e-9), "B": np.full(200, 3.0)}), spec)
    feats = feats.select(MARKET_FEATURES).drop_nulls()
    assert feats.height > 0
    assert (feats["mkt_ret_60m"] == 0).all()
    assert (feats["mkt_breadth_15m"] == 0.5).all()  # no token moved
    assert (feats["mkt_beta_60m"] == 0).all()
    assert (feats["mkt_resid_15m"] == 0).all()


def test_the_market_does_not_depend_on_the_order_tokens_arrive_in() -> None:
    bars = synth_market(25, 200, seed=9)
    spec = build_spec(1, 15, market=True)
    forward, backward = FeatureStream(spec), FeatureStream(spec)
    for _, minute in bars.sort("ts", "token").group_by("ts", maintain_order=True):
        a = forward.update(minute)
        b = backward.update(minute.reverse())
        assert _same(a.values, b.values[::-1])


@pytest.mark.parametrize("name", ["binance-futures-1m", "binance-spot-5m-universe", "freqtrade-gaps"])
def test_market_stream_equals_batch_and_history_driver_on_real_data(name: str) -> None:
    """Every feature, market context included, bit for bit: the batch driver, the stream fed minute by
    minute (the daemon) and the backtester's history driver in blocks that cut tokens."""
    bars = real_bars(name).group_by("token", maintain_order=True).head(12_000)
    spec = build_spec(infer_interval_minutes(bars), 15, market=True)
    batch = compute_features(bars, spec)
    stream = stream_features(bars, spec)
    for col in spec.names:
        assert _same(batch[col].to_numpy().astype(float), stream[col].to_numpy().astype(float)), col
    rows = history_rows(bars)
    blocks = BlockFeatures(spec, rows)
    history = np.concatenate([blocks(b)[0] for b in plan_blocks(rows.starts, 5_000, True)])
    assert _same(history, batch.select(spec.names).to_numpy().astype(float))
    market = batch.select(MARKET_FEATURES).drop_nulls()
    assert market.height > 0.9 * batch.height
    if bars["token"].n_unique() > 1:
        assert market["mkt_beta_60m"].std() > 0  # not a constant
    else:  # a one-token market is the token itself
        assert np.allclose(market["mkt_beta_60m"].to_numpy(), 1.0)


def test_market_context_does_not_depend_on_when_the_daemon_started() -> None:
    """A daemon started an hour or a day after the data begins sees every token from then on: past the
    warm-up every feature, market context included, agrees with the full history."""
    bars = real_bars("binance-spot-5m-universe").group_by("token", maintain_order=True).head(3_000)
    spec = build_spec(5, 30, market=True)
    report = check_start_invariance(
        bars, lambda b: compute_features(b, spec, with_ready=True), cuts=(60, 1440), from_data_start=True
    )
    assert report.rows_checked > 50_000
    assert report.ok, report.drift


def test_the_start_check_sees_a_market_that_is_not_settled() -> None:
    """Cutting each token's own start (other tokens keep their bars) changes the market in the minutes
    around every cut: the check must see that, or it could not see a real start dependence."""
    bars = real_bars("binance-spot-5m-universe").group_by("token", maintain_order=True).head(3_000)
    spec = build_spec(5, 30, market=True)
    report = check_start_invariance(bars, lambda b: compute_features(b, spec, with_ready=True), cuts=(60,))
    assert set(report.drift) & set(MARKET_FEATURES)


def test_a_snapshot_mid_stream_continues_exactly() -> None:
    bars = synth_market(10, 300, seed=4).sort("ts", "token")
    spec = build_spec(1, 15, market=True)
    whole = stream_features(bars, spec)
    minutes = [m for _, m in bars.group_by("ts", maintain_order=True)]
    stream = FeatureStream(spec)
    for m in minutes[:150]:
        stream.update(m)
    stream = FeatureStream.restore(spec, stream.snapshot())
    tail = [stream.update(m) for m in minutes[150:]]
    got = np.concatenate([u.values for u in tail])
    keys = pl.concat(minutes[150:]).select("token", "ts")
    want = keys.join(whole, on=["token", "ts"], maintain_order="left")
    assert _same(got, want.select(spec.names).to_numpy().astype(float))
    with pytest.raises(Exception, match=r"wrong state size|truncated"):
        FeatureStream.restore(spec, stream.snapshot()[:-8])
    with pytest.raises(Exception, match="feature spec"):
        FeatureStream.restore(build_spec(1, 15), stream.snapshot())  # a spec without market context


def test_market_context_needs_short_bars_and_time_ordered_minutes() -> None:
    with pytest.raises(ConfigError, match="1, 3 or 5 minutes"):
        build_spec(60, 15, market=True)
    assert build_spec(1, 15, market=True).hash != build_spec(1, 15).hash
    stream = FeatureStream(build_spec(1, 15, market=True))
    bars = synth_market(2, 5, seed=1).sort("ts", descending=True)
    with pytest.raises(ValueError, match="time order"):
        stream.update(bars)


def test_a_market_model_set_replays_in_bulk_as_the_minute_loop_decides(
    tiny_market: Path, tmp_path: Path
) -> None:
    from memed.backtest.replay import replay_signals, replay_signals_minutewise

    toml = '[data]\nmarket_context = true\n[train]\nmodels = ["logreg"]\nhorizons = [15, 30, 60]\n'
    cfg = parse_config(toml)
    manifest = train_model_set([tiny_market], cfg, tmp_path)
    assert set(MARKET_FEATURES) <= set(manifest.feature_names)
    ms = load_model_set(tmp_path)
    bars = synth_market(6, 700, seed=21)
    windows = [(bars["ts"].min(), bars["ts"].max() + timedelta(minutes=1))]
    slow = replay_signals_minutewise(DecisionPath(ms, cfg.signals, cfg.risk), bars, windows)  # type: ignore[arg-type]
    fast = replay_signals(DecisionPath(ms, cfg.signals, cfg.risk), bars, windows, block_rows=700)  # type: ignore[arg-type]
    assert fast.columns == slow.columns
    for col in fast.columns:
        a, b = fast[col], slow[col]
        if a.dtype.is_float():
            assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-12, equal_nan=True), col
        else:
            assert a.equals(b), col
    assert fast["p_60"].is_not_nan().sum() > 1000
