"""Streaming and batch drivers agree exactly (nulls included) on real and adversarial data."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import real_bars
from memed.data import GapRule, fill_gaps, infer_interval_minutes, synth_market
from memed.data.schema import conform
from memed.features import FeatureStream, build_spec, compute_features, stream_features
from memed.features.batch import _balanced_chunks


def _assert_identical(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.columns == b.columns
    assert a.height == b.height
    for name in a.columns[2:]:
        x, y = a[name].to_numpy().astype(float), b[name].to_numpy().astype(float)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        assert same.all(), f"{name}: {(~same).sum()} rows differ, first at {np.flatnonzero(~same)[0]}"
    assert a.select("token", "ts").equals(b.select("token", "ts"))


@pytest.mark.parametrize("gap_fill", [15, 240])
def test_stream_equals_batch_on_real_data(real_dataset: tuple[str, pl.DataFrame], gap_fill: int) -> None:
    _, bars = real_dataset
    spec = build_spec(infer_interval_minutes(bars), gap_fill)
    _assert_identical(compute_features(bars, spec), stream_features(bars, spec))


def test_stream_equals_batch_on_synthetic_market() -> None:
    bars = synth_market(60, 900, seed=11)
    spec = build_spec(1, 15)
    _assert_identical(compute_features(bars, spec, threads=2), stream_features(bars, spec))


def test_thread_count_does_not_change_results() -> None:
    bars = synth_market(30, 400, seed=2)
    spec = build_spec(1, 15)
    _assert_identical(compute_features(bars, spec, threads=1), compute_features(bars, spec, threads=2))


def test_tokens_are_shared_among_threads_by_size() -> None:
    """Longest token first, to the least loaded thread: every token exactly once, loads balanced even
    when the two largest tokens are neighbours."""
    starts = np.array([0, 48_105, 96_210, 109_891, 109_900])
    shares = _balanced_chunks(starts, 2)
    spans = sorted(map(tuple, np.concatenate(shares).tolist()))
    assert spans == list(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True))
    loads = sorted(int((s[:, 1] - s[:, 0]).sum()) for s in shares)
    assert loads == [48_105 + 9, 48_105 + 13_681]
    assert len(_balanced_chunks(starts, 8)) == 4  # no more workers than tokens


@pytest.mark.parametrize("name", ["freqtrade-gaps", "pumpfun-hourly"])
def test_kernel_gap_rule_equals_fill_gaps(name: str) -> None:
    """The kernel fills short gaps itself; feeding it data.fill_gaps' frame gives the same features."""
    bars = real_bars(name)
    interval = infer_interval_minutes(bars)
    spec = build_spec(interval, 180)
    filled = fill_gaps(bars, GapRule(interval, 180))
    via_frame = compute_features(filled.drop("segment", "filled"), spec)
    observed = via_frame.join(bars.select("token", "ts"), on=["token", "ts"], how="semi")
    _assert_identical(compute_features(bars, spec), observed)


T0 = datetime(2026, 3, 1, tzinfo=UTC)


@st.composite
def adversarial_series(draw: st.DrawFn) -> pl.DataFrame:
    """Constants, zero volume, prices of 1e-9, x1000 jumps, long and short gaps, single bars."""
    tokens = draw(st.integers(1, 3))
    frames = []
    for t in range(tokens):
        n = draw(st.integers(1, 160))
        base = draw(st.sampled_from([1e-9, 3.3e-7, 0.01, 1.0]))
        kind = draw(st.sampled_from(["const", "walk", "jumps"]))
        steps = draw(st.lists(st.sampled_from([1, 1, 1, 1, 2, 5, 16, 400]), min_size=n, max_size=n))
        moves = draw(
            st.lists(
                st.sampled_from([0.0, 0.0, 1e-4, -1e-4, 0.05, -0.05, 6.9077, -6.9077]), min_size=n, max_size=n
            )
        )
        vol = draw(st.sampled_from([0.0, 1.0, 1e9]))
        logp = np.log(base) + (np.cumsum(moves) if kind != "const" else np.zeros(n))
        if kind == "walk":
            logp = np.log(base) + np.cumsum(np.clip(moves, -0.05, 0.05))
        close = np.exp(logp)
        minutes = np.cumsum(steps) - steps[0]
        frames.append(pl.DataFrame({
            "token": [f"T{t}"] * n,
            "ts": [T0 + timedelta(minutes=int(m)) for m in minutes],
            "open": close, "high": close * 1.001, "low": close / 1.001, "close": close,
            "volume": np.full(n, vol),
        }))  # fmt: skip
    return conform(pl.concat(frames)).sort("token", "ts")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bars=adversarial_series())
def test_stream_equals_batch_on_adversarial_series(bars: pl.DataFrame) -> None:
    spec = build_spec(1, 15)
    batch = compute_features(bars, spec)
    _assert_identical(batch, stream_features(bars, spec))
    values = batch.select(spec.names).to_numpy().astype(float)
    assert not np.isinf(values).any()


def test_duplicates_out_of_order_and_restarts_in_stream() -> None:
    spec = build_spec(1, 15)
    stream = FeatureStream(spec, capacity=1)
    bars = synth_market(1, 120, seed=5).head(100)
    first = stream.update(bars.head(80))
    assert first.stale == 0
    again = stream.update(bars.slice(70, 10))  # already seen: duplicates and out-of-order
    assert again.stale == 10
    assert np.isnan(again.values).all()
    assert not again.ready.any()
    late = bars.slice(80, 1).with_columns(pl.col("ts") + timedelta(hours=3))
    restarted = stream.update(late)
    assert restarted.restarts == 1
    assert not stream.ready(late["token"][0])
