"""Backtest replay throughput on ../shared/data with the default (packaged) model set.

Replays every bar of the real 1-minute sets through the decision path's bulk form
(``DecisionPath.process_history``, what ``memed backtest`` runs; no training), then simulates execution,
and reports token-minutes/s split into features, inference, decisions (books, ensemble, policy, risk)
and simulation. In the same run it times the raw ONNX Runtime calls of the same models on the same
inputs at the same batch shapes (tabular models in chunks of ``TABULAR_BATCH`` rows, the LSTM's
whole-sequence graph over each run), for the "replay vs raw inference" ratio.

With ``--minute-loop N`` it also replays the first N minutes through the daemon's minute loop
(``DecisionPath.process``, one call per minute) and the bulk form, and prints both speeds and the largest
difference between their probabilities.

    python benchmarks/backtest.py [--data-root ../shared/data] [--minutes N] [--minute-loop N]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from memed.backtest.replay import replay_signals, replay_signals_minutewise
from memed.backtest.simulator import market_bars, simulate
from memed.config import MemedConfig
from memed.daemon.demo import DEMO_MODELS
from memed.data import load_dataset
from memed.history import TABULAR_BATCH, history_rows, ready_runs
from memed.models.registry import ModelSet, load_model_set
from memed.models.runtime import SEQUENCE_CHUNK
from memed.pipeline import DecisionPath


def raw_inference(path: DecisionPath, bars: pl.DataFrame) -> tuple[float, int]:
    """Seconds spent in ONNX Runtime alone scoring what the replay scores, at the replay's batch shapes
    (inputs prepared beforehand, only ``session.run`` timed), and the number of ready rows. Tabular models
    score every row in chunks (the replay discards the few unready rows' outputs)."""
    rows = history_rows(path.spec, bars)
    values = rows.values
    runs = ready_runs(rows.starts, rows.ready)
    spent = 0.0
    for runner in path.runners.values():
        kind = runner.entry.kind
        if kind == "tabular":
            chunks = [values[a : a + TABULAR_BATCH] for a in range(0, len(values), TABULAR_BATCH)]
            t = time.perf_counter()
            for chunk in chunks:
                runner.session.run(None, {"features": chunk})
            spent += time.perf_counter() - t
        elif kind == "stateful":
            seq = runner.sequence_session()
            assert seq is not None, "the LSTM has no whole-sequence form"
            layers, hidden = runner.entry.state_shape
            for a, b in runs.tolist():
                chunks = [
                    np.ascontiguousarray(values[s : min(s + SEQUENCE_CHUNK, b)])[None]
                    for s in range(a, b, SEQUENCE_CHUNK)
                ]
                h = np.zeros((layers, 1, hidden), dtype=np.float32)
                c = np.zeros_like(h)
                t = time.perf_counter()
                for chunk in chunks:
                    _, h, c = seq.run(None, {"features": chunk, "h": h, "c": c})
                spent += time.perf_counter() - t
        else:
            raise SystemExit(f"{runner.entry.name}: window models are not in the default set")
    return spent, int(rows.ready.sum())


def replay_once(ms: ModelSet, cfg: MemedConfig, bars: pl.DataFrame) -> dict[str, Any]:
    """One replay and simulation of ``bars`` on a fresh path: seconds per stage."""
    path = DecisionPath(ms, cfg)
    t0 = time.perf_counter()
    signals = replay_signals(path, bars, whole(bars))
    replay_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    simulate(signals, market_bars(bars), cfg.backtest, equity0=cfg.risk.equity, hold_minutes=60)
    sim_s = time.perf_counter() - t0
    tm = path.timings
    return {
        "rows": signals.height,
        "minutes": signals["ts"].n_unique(),
        "models": list(path.runners),
        "features": tm["features"],
        "inference": tm["inference"],
        "decision": tm["decision"],
        "driver": replay_s - tm["features"] - tm["inference"] - tm["decision"],
        "simulation": sim_s,
        "non_inference": replay_s - tm["inference"] + sim_s,
        "total": replay_s + sim_s,
    }


def whole(bars: pl.DataFrame) -> list[tuple[datetime, datetime]]:
    start, end = bars["ts"].min(), bars["ts"].max()
    assert isinstance(start, datetime)
    assert isinstance(end, datetime)
    return [(start, end + timedelta(minutes=1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--minutes", type=int, default=0, help="replay only the first N minutes (0: all)")
    ap.add_argument("--repeat", type=int, default=5, help="timed replays after the first (default 5)")
    ap.add_argument(
        "--minute-loop", type=int, default=0, help="also compare with the minute loop (N minutes)"
    )
    args = ap.parse_args()
    folders = [args.data_root / n for n in ("binance-futures-1m", "freqtrade-gaps")]
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        raise SystemExit(f"no 1-minute data under {args.data_root}")
    bars, _ = load_dataset(folders)
    first = bars["ts"].min()
    assert isinstance(first, datetime)
    if args.minutes:
        bars = bars.filter(pl.col("ts") < first + timedelta(minutes=args.minutes))
    cfg = MemedConfig()
    ms = load_model_set(DEMO_MODELS)

    t0 = time.perf_counter()  # one-off costs: compiled kernels from numba's cache, the LSTM's sequence graph
    replay_signals(DecisionPath(ms, cfg), bars.head(2000), whole(bars.head(2000)))
    warm_s = time.perf_counter() - t0

    runs = [replay_once(ms, cfg, bars) for _ in range(args.repeat + 1)]
    cold, steady = runs[0], runs[1:]
    raws = [raw_inference(DecisionPath(ms, cfg), bars) for _ in range(args.repeat + 1)][1:]
    raw_s = float(np.median([r[0] for r in raws]))
    scored = raws[0][1]
    n = cold["rows"]

    def med(key: str) -> float:
        return float(np.median([r[key] for r in steady]))

    def span(key: str) -> str:
        vals = [r[key] for r in steady]
        return f"{min(vals):.3f}-{max(vals):.3f}"

    def rate(key: str) -> str:
        vals = [n / r[key] for r in steady]
        return f"{n / med(key):,.0f} token-min/s ({min(vals):,.0f}-{max(vals):,.0f})"

    print(f"data: {', '.join(str(f) for f in folders)}: {n:,} token-minutes over "
          f"{cold['minutes']:,} minutes, {scored:,} scored; model set {ms.id} "
          f"({', '.join(cold['models'])}); {args.repeat} timed replays after a first one")  # fmt: skip
    print(f"one-off warm-up (numba cache, sequence graph): {warm_s:.2f} s; first full replay "
          f"{cold['total']:.3f} s (fresh memory pages: see the README)")  # fmt: skip
    print("seconds, median (range) of the timed replays:")
    for key in ("features", "inference", "decision", "driver", "simulation", "non_inference", "total"):
        print(f"  {key:14s} {med(key):.3f} ({span(key)})")
    print(f"throughput: replay + simulation {rate('total')} | everything but inference "
          f"{rate('non_inference')} | features alone {rate('features')}")  # fmt: skip
    print(f"raw ONNX Runtime, same models, same inputs and batch shapes: {raw_s:.3f} s = "
          f"{n / raw_s:,.0f} token-min/s -> replay + simulation at {raw_s / med('total'):.0%} of raw "
          "inference speed (medians)")  # fmt: skip

    if args.minute_loop:
        part = bars.filter(pl.col("ts") < first + timedelta(minutes=args.minute_loop))
        t0 = time.perf_counter()
        loop = replay_signals_minutewise(DecisionPath(ms, cfg), part, whole(part))
        loop_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bulk = replay_signals(DecisionPath(ms, cfg), part, whole(part))
        bulk_s = time.perf_counter() - t0
        cols = [c for c in bulk.columns if c.startswith("p_")]
        diff = max(
            float(np.nanmax(np.abs(bulk[c].to_numpy() - loop[c].to_numpy()), initial=0.0)) for c in cols
        )
        same = bool((bulk["action"] == loop["action"]).all())
        print(f"minute loop vs bulk on {args.minute_loop:,} minutes ({part.height:,} bars): "
              f"{part.height / loop_s:,.0f} vs {part.height / bulk_s:,.0f} token-min/s; "
              f"actions identical: {same}; max |dp| {diff:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
