"""Feature engine benchmark on the real data of ../shared/data.

Prints: batch throughput of the full feature set (token-minutes/s, 1 thread and all cores), TA-Lib's time
for its subset of indicators on the same bars and the ratio, the streaming update of 10,000 tokens for
one minute (p50 / p99 over many minutes), and the per-token state size.

    python benchmarks/features.py [--data ../shared/data] [--repeat 5] [--tokens 10000]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import talib  # test-only dependency (the dev extra): the oracle

from memed.data import load_dataset
from memed.data.frames import bar_matrix, epoch_minutes
from memed.features import FeatureStream, build_spec
from memed.features.batch import compute_raw
from memed.features.layout import STATE_SIZE


def best_of(repeat: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def talib_subset(bars: pl.DataFrame) -> None:
    for _, one in bars.group_by("token"):
        h, lo, c, v = (one[k].to_numpy() for k in ("high", "low", "close", "volume"))
        talib.RSI(c, 14)
        talib.ATR(h, lo, c, 14)
        talib.MACD(c, 12, 26, 9)
        talib.BBANDS(c, 20, 2, 2, 0)
        talib.STOCHF(h, lo, c, 14, 3, 0)
        talib.WILLR(h, lo, c, 14)
        talib.CCI(h, lo, c, 20)
        talib.OBV(c, v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--minutes", type=int, default=200)
    args = ap.parse_args()
    folder = Path(args.data) / "binance-futures-1m"
    if not folder.is_dir():
        raise SystemExit(f"real data not found at {folder}")
    bars, _ = load_dataset([folder])
    spec = build_spec(1, 15)
    rows = bars.height
    print(
        f"machine: {os.cpu_count()} cores; data: {folder.name}, {rows:,} token-minutes, "
        f"{len(spec.names)} features"
    )

    compute_raw(bars, spec, threads=1)  # compile / load the cache
    t1 = best_of(args.repeat, lambda: compute_raw(bars, spec, threads=1))
    tn = best_of(args.repeat, lambda: compute_raw(bars, spec, threads=os.cpu_count()))
    tt = best_of(args.repeat, lambda: talib_subset(bars))
    print(
        f"batch, 1 thread      : {t1 * 1e3:8.1f} ms  = {rows / t1 / 1e6:6.2f} M token-minutes/s (target >= 3)"
    )
    print(
        f"batch, {os.cpu_count()} threads     : {tn * 1e3:8.1f} ms  = "
        f"{rows / tn / 1e6:6.2f} M token-minutes/s"
    )
    print(f"TA-Lib, 8 indicators : {tt * 1e3:8.1f} ms  = {rows / tt / 1e6:6.2f} M token-minutes/s")
    print(f"memed (54 features) / TA-Lib (11 outputs) time ratio, 1 thread: {t1 / tt:.2f}")

    # Streaming: 10,000 tokens replaying the PEPE series from staggered starts, one minute per update.
    one = bars.filter(pl.col("token") == bars["token"][0])
    x = bar_matrix(one)
    ts = epoch_minutes(one["ts"])
    n_tok = args.tokens
    offsets = np.random.default_rng(0).integers(0, len(ts) - args.minutes - 100, n_tok)
    names = [f"TOK{i:05d}" for i in range(n_tok)]
    stream = FeatureStream(spec, capacity=n_tok)
    lat = []
    for m in range(args.minutes):
        idx = offsets + m
        xm = np.ascontiguousarray(x[:, idx])
        tm = np.full(n_tok, ts[0] + m)
        t = time.perf_counter()
        update = stream.update_arrays(names, tm, xm)
        lat.append(time.perf_counter() - t)
    lat_ms = np.array(lat[5:]) * 1e3
    print(
        f"stream update, {n_tok:,} tokens x 1 minute: p50 {np.percentile(lat_ms, 50):.2f} ms, "
        f"p99 {np.percentile(lat_ms, 99):.2f} ms (target <= 10 ms); ready {update.ready.mean():.0%}"
    )
    print(f"per-token state: {STATE_SIZE * 8:,} bytes ({STATE_SIZE} float64), constant in history length")


if __name__ == "__main__":
    main()
