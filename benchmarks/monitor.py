"""Delayed-label scoring cost: one ScoreStream.step per minute (resolve + insert for every horizon) and a
snapshot (scores over the window), at 1k, 10k and 50k tokens ticking every minute, 7 horizons (15 m …
12 h) on 1-minute bars; and the memory the ring buffers take.

    python benchmarks/monitor.py [--tokens 1000 10000 50000] [--minutes 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from memed.monitor.stream import ScoreStream

HORIZONS = (15, 30, 60, 120, 240, 360, 720)


def run(n: int, minutes: int) -> None:
    rng = np.random.default_rng(0)
    tokens = [f"T{i:06d}" for i in range(n)]
    stream = ScoreStream(HORIZONS, window_minutes=1440, every_minutes=10**9)
    close = np.exp(rng.normal(0, 1, n))
    action = np.full(n, 2, np.int8)
    side = np.zeros(n, np.int8)
    warm = 730  # past the longest horizon: every minute resolves labels at every horizon
    steps = []
    for m in range(warm + minutes):
        close = close * np.exp(rng.normal(0, 0.01, n))
        p = rng.random((n, len(HORIZONS)))
        t0 = time.perf_counter()
        stream.step(tokens, m, close, p, action, side)
        if m >= warm:
            steps.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    stream.board.scores()
    snap = time.perf_counter() - t0
    mb = stream.labels.bytes_per_token * n / 1e6
    step_ms = f"median {np.median(steps) * 1e3:7.1f} ms, p95 {np.percentile(steps, 95) * 1e3:7.1f} ms"
    print(f"{n:>7,} tokens: step {step_ms}; snapshot {snap * 1e3:6.1f} ms; ring buffers {mb:,.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--minutes", type=int, default=20)
    args = ap.parse_args()
    for n in args.tokens:
        run(n, args.minutes)


if __name__ == "__main__":
    main()
