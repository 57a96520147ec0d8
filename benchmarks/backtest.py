"""Backtest replay throughput on ../shared/data with the default (packaged) model set.

Replays every minute of the real 1-minute sets through the daemon's decision path (no training), then
simulates execution, and reports token-minutes/s split into features, inference, decisions (ensemble,
policy, risk, bookkeeping) and simulation. In the same run it times the raw ONNX Runtime calls of the same
models at the same batch size (the tokens ticking per minute), for the "replay vs raw inference" ratio.

    python benchmarks/backtest.py [--data-root ../shared/data] [--minutes N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from memed.backtest.replay import replay_signals
from memed.backtest.simulator import simulate, token_bars
from memed.config import MemedConfig
from memed.daemon.demo import DEMO_MODELS
from memed.data import load_dataset
from memed.models.registry import load_model_set
from memed.pipeline import DecisionPath


def raw_inference(ms_path: Path, batch: int, calls: int, n_features: int) -> float:
    """Token-minutes/s of the served models alone at ``batch`` rows per call (LSTM stepped)."""
    ms = load_model_set(ms_path)
    x = np.random.default_rng(0).normal(size=(batch, n_features))
    runners = [r for n, r in ms.runners.items() if n in MemedConfig().signals.models]
    h = c = None
    t = time.perf_counter()
    for _ in range(calls):
        for r in runners:
            if r.entry.kind == "tabular":
                r.predict(x)
            elif r.entry.kind == "stateful":
                if h is None:
                    layers, hidden = r.entry.state_shape
                    h = np.zeros((layers, batch, hidden), dtype=np.float32)
                    c = np.zeros_like(h)
                _, h, c = r.step(x, h, c)
    return batch * calls / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--minutes", type=int, default=0, help="replay only the first N minutes (0: all)")
    args = ap.parse_args()
    folders = [args.data_root / n for n in ("binance-futures-1m", "freqtrade-gaps")]
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        raise SystemExit(f"no 1-minute data under {args.data_root}")
    bars, _ = load_dataset(folders)
    if args.minutes:
        bars = bars.filter(pl.col("ts") < bars["ts"].min() + pl.duration(minutes=args.minutes))  # type: ignore[operator]
    cfg = MemedConfig()
    ms = load_model_set(DEMO_MODELS)
    path = DecisionPath(ms, cfg)
    start, end = bars["ts"].min(), bars["ts"].max()
    t0 = time.perf_counter()
    signals = replay_signals(path, bars, [(start, end + (end - start) / 1e6)])  # type: ignore[arg-type, operator]
    replay_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    sim = simulate(signals, token_bars(bars), cfg.backtest, equity0=cfg.risk.equity, hold_minutes=60)
    sim_s = time.perf_counter() - t1
    n = signals.height
    minutes = signals["ts"].n_unique()
    batch = max(1, round(n / minutes))
    tm = path.timings
    other = replay_s - tm["features"] - tm["inference"] - tm["decision"]
    raw = raw_inference(DEMO_MODELS, batch, 3000, len(ms.manifest.feature_names))
    non_inference = replay_s - tm["inference"] + sim_s
    print(
        f"data: {', '.join(str(f) for f in folders)}: {n:,} token-minutes over {minutes:,} minutes "
        f"(~{batch} tokens per minute); model set {ms.id} ({', '.join(path.runners)})"
    )
    print(
        f"replay {replay_s:.2f} s = features {tm['features']:.2f} + inference {tm['inference']:.2f} + "
        f"decisions {tm['decision']:.2f} + driver {other:.2f}; "
        f"simulation {sim_s:.2f} s ({sim.trades.height} trades)"
    )
    print(
        f"throughput: whole replay {n / replay_s:,.0f} token-min/s | everything but inference "
        f"{n / non_inference:,.0f} token-min/s | features alone {n / tm['features']:,.0f} token-min/s"
    )
    print(
        f"raw ONNX Runtime, same models, batch {batch}: {raw:,.0f} token-min/s -> replay at "
        f"{(n / (replay_s + sim_s)) / raw:.0%} of raw inference speed"
    )


if __name__ == "__main__":
    main()
