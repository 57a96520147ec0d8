"""Causality, bounded state, snapshots and the spec hash."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import real_bars
from memed.data import synth_market
from memed.errors import SnapshotError, SpecMismatchError
from memed.features import FeatureStream, build_spec, compute_features


def test_truncation_changes_no_past_feature() -> None:
    bars = real_bars("binance-futures-1m").filter(pl.col("token") == "1000PEPE_USDT_USDT").head(3000)
    spec = build_spec(1, 15)
    full = compute_features(bars, spec)
    for cut in (1, 2, 30, 65, 500, 1234, 2999):
        part = compute_features(bars.head(cut), spec)
        assert part.equals(full.head(cut)), (
            f"features at or before bar {cut} changed when later bars were dropped"
        )


def test_planted_future_peek_is_detected_by_the_truncation_check() -> None:
    bars = synth_market(1, 600, seed=1)
    f = compute_features(bars, build_spec(1, 15)).with_columns(peek=pl.col("rsi_14").shift(-1))
    part = compute_features(bars.head(450), build_spec(1, 15)).with_columns(peek=pl.col("rsi_14").shift(-1))
    assert not part.head(450).equals(f.head(450))  # the same check catches a leak


def test_state_is_bounded() -> None:
    spec = build_spec(1, 15)
    short, long_ = FeatureStream(spec, capacity=1), FeatureStream(spec, capacity=1)
    short.update(synth_market(1, 20, seed=3))
    long_.update(synth_market(1, 20_000, seed=3))
    token = long_.tokens[0]
    assert short.state_bytes(token) == long_.state_bytes(token) < 8_192
    assert len(short.snapshot()) == len(long_.snapshot())


def test_snapshot_restore_continues_identically() -> None:
    spec = build_spec(1, 15)
    bars = synth_market(25, 500, seed=9).sort("ts", "token")
    minutes = bars["ts"].unique().sort()
    cut = minutes[250]
    whole = FeatureStream(spec)
    first = FeatureStream(spec)
    first.update(bars.filter(pl.col("ts") < cut))
    whole.update(bars.filter(pl.col("ts") < cut))
    resumed = FeatureStream.restore(spec, first.snapshot())
    rest = bars.filter(pl.col("ts") >= cut)
    a, b = whole.update(rest), resumed.update(rest)
    assert np.array_equal(a.values, b.values, equal_nan=True)
    assert np.array_equal(a.ready, b.ready)


def test_snapshot_refuses_other_spec_and_garbage() -> None:
    stream = FeatureStream(build_spec(1, 15))
    stream.update(synth_market(2, 50, seed=0))
    blob = stream.snapshot()
    with pytest.raises(SpecMismatchError):
        FeatureStream.restore(build_spec(1, 30), blob)
    with pytest.raises(SnapshotError):
        FeatureStream.restore(build_spec(1, 15), b"garbage")
    with pytest.raises(SnapshotError):
        FeatureStream.restore(build_spec(1, 15), blob[:-8])


def test_eviction_frees_idle_tokens() -> None:
    stream = FeatureStream(build_spec(1, 15))
    bars = synth_market(5, 60, seed=0)
    stream.update(bars)
    last = bars["ts"].max().timestamp() // 60  # type: ignore[union-attr]
    gone = stream.evict_idle(last + 1_000, ttl_minutes=60)
    assert sorted(gone) == sorted(bars["token"].unique().to_list())
    assert len(stream) == 0


def test_spec_hash_is_stable_and_sensitive() -> None:
    a = build_spec(1, 15)
    assert a.hash == build_spec(1, 15).hash
    assert a.hash != build_spec(5, 15).hash != build_spec(1, 30).hash
    assert len(set(a.names)) == len(a.names) == 49
    required = {"rsi_14", "atr_pct_14", "macd_pct", "macd_signal_pct", "macd_hist_pct", "bb_upper_dist_20",
                "bb_lower_dist_20", "stoch_k_14", "willr_14", "cci_20", "net_volume_30m"}  # fmt: skip
    assert required <= set(a.names)
    # start-dependent or price-level: not features (tests/test_trainers_data.py: the start check)
    assert not {"age_minutes", "obv", "atr_14", "macd", "bb_upper_20", "bb_lower_20"} & set(a.names)
    assert all(n == n.lower() and " " not in n for n in a.names)


def test_values_before_warmup_are_null_never_zero() -> None:
    spec = build_spec(1, 15)
    f = compute_features(synth_market(1, 400, seed=4), spec)
    for feat in spec.features:
        if feat.optional:
            continue
        col = f[feat.name]
        assert col[: feat.warmup - 1].null_count() == feat.warmup - 1, feat.name
        assert col[feat.warmup - 1 :].null_count() == 0 or feat.name.startswith("fft"), feat.name


def test_a_numba_cache_built_for_other_kernel_sources_is_cleared(tmp_path: Path) -> None:
    """numba keys a cached function on its own module's source only: the drivers' caches outlive an edit
    of the kernel they inline, and would write features into stale columns. The digest stamp clears them."""
    import shutil

    from memed.features import numba_cache

    folder = tmp_path / "features"
    (folder / "__pycache__").mkdir(parents=True)
    for name in numba_cache.SOURCES:
        shutil.copy(Path(numba_cache.__file__).parent / name, folder / name)
    stale = folder / "__pycache__" / "batch._run_groups-27.py311.nbi"
    stale.write_bytes(b"old")
    assert numba_cache.invalidate_if_changed(folder)  # no stamp for these sources: cleared
    assert not stale.exists()
    stale.write_bytes(b"fresh")
    assert not numba_cache.invalidate_if_changed(folder)  # stamped: kept
    assert stale.exists()
    (folder / "kernel.py").write_text((folder / "kernel.py").read_text() + "\n# an edit\n")
    assert numba_cache.invalidate_if_changed(folder)  # the kernel changed: cleared again
    assert not stale.exists()
