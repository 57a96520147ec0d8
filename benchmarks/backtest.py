"""Backtest replay throughput on ../shared/data with the default (packaged) model set.

Replays every bar of the real 1-minute sets through the decision path's bulk form
(``DecisionPath.process_history``, what ``memed backtest`` runs; no training), then simulates execution,
and reports token-minutes/s split into features, inference, decisions (books, ensemble, policy, risk)
and simulation. In the same run it times the raw ONNX Runtime calls of the same models on the same
inputs, in the same order and batch shapes (the replay's blocks of ``BLOCK_ROWS`` rows; the LSTM's
whole-sequence graph over each run of ready rows within a block), for the "replay vs raw inference"
ratio. Each round times a serial replay (every stage in one thread), an overlapped one (the default) and
raw inference back to back; ratios are taken within a round.

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
from memed.decision import BLOCK_ROWS, DecisionPath, StatefulScorer, TabularScorer
from memed.decision.history import BlockFeatures, history_rows, plan_blocks, ready_runs, splits_tokens
from memed.models.registry import ModelSet, load_model_set
from memed.models.runtime import SEQUENCE_CHUNK


def raw_inference(path: DecisionPath, bars: pl.DataFrame) -> tuple[float, int]:
    """Seconds spent in ONNX Runtime alone scoring what the replay scores, in the replay's order and
    batch shapes, and the number of ready rows. Block by block, as the replay: the block's features are
    computed (not timed; they are as fresh in the caches as the replay's), then only the models'
    ``session.run`` calls are timed: each tabular model on every row of the block (the replay discards the
    few unready rows' outputs), the LSTM's whole-sequence graph over each run of ready rows within the
    block, in chunks of ``SEQUENCE_CHUNK``, its state carried across blocks as the replay carries it."""
    rows = history_rows(bars)
    features = BlockFeatures(path.spec, rows)
    state: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    spent = 0.0
    scored = 0
    for blk in plan_blocks(rows.starts, BLOCK_ROWS, splits_tokens(path.scorers)):
        values, ready = features(blk)
        scored += int(ready.sum())
        runs = ready_runs(blk.bounds, ready).tolist()
        for scorer in path.scorers:
            name, runner = scorer.name, scorer.runner
            if isinstance(scorer, TabularScorer):
                t = time.perf_counter()
                runner.session.run(None, {"features": values})
                spent += time.perf_counter() - t
            elif isinstance(scorer, StatefulScorer):
                seq = runner.sequence_session()
                assert seq is not None, "the LSTM has no whole-sequence form"
                layers, hidden = runner.entry.state_shape
                zero = np.zeros((layers, 1, hidden), dtype=np.float32)
                for a, b in runs:
                    h, c = state[name] if (a == 0 and blk.continues and name in state) else (zero, zero)
                    chunks = [
                        values[s : min(s + SEQUENCE_CHUNK, b)][None] for s in range(a, b, SEQUENCE_CHUNK)
                    ]
                    t = time.perf_counter()
                    for chunk in chunks:
                        _, h, c = seq.run(None, {"features": chunk, "h": h, "c": c})
                    spent += time.perf_counter() - t
                    state[name] = (h, c)
            else:
                raise SystemExit(f"{runner.entry.name}: window models are not in the default set")
    return spent, scored


def replay_once(ms: ModelSet, cfg: MemedConfig, bars: pl.DataFrame, overlap: bool) -> dict[str, Any]:
    """One replay and simulation of ``bars`` on a fresh path: seconds per stage (each stage's own time,
    whichever thread ran it) and wall-clock seconds."""
    path = DecisionPath(ms, cfg.signals, cfg.risk)
    t0 = time.perf_counter()
    signals = replay_signals(path, bars, whole(bars), overlap=overlap)
    replay_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    simulate(signals, market_bars(bars), cfg.backtest, equity0=cfg.risk.equity, hold_minutes=60)
    sim_s = time.perf_counter() - t0
    tm = path.timings
    total = replay_s + sim_s
    return {
        "rows": signals.height,
        "minutes": signals["ts"].n_unique(),
        "models": [s.name for s in path.scorers],
        "features": tm["features"],
        "features_wait": tm["features_wait"],
        "inference": tm["inference"],
        "decision": tm["decision"],
        "simulation": sim_s,
        "replay": replay_s,
        "total": total,
        # wall-clock seconds of the replay and simulation not spent in ONNX Runtime: what the
        # non-inference work adds to the run (all of it when serial, what overlap leaves exposed else)
        "non_inference": total - tm["inference"],
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
    replay_signals(DecisionPath(ms, cfg.signals, cfg.risk), bars.head(2000), whole(bars.head(2000)))
    warm_s = time.perf_counter() - t0

    # Rounds: each times a serial replay, an overlapped replay and raw inference back to back, so that
    # the ratios compare runs taken under the same conditions (this machine's speed drifts by 10-20 %).
    modes = {"serial": False, "overlapped": True}
    rounds = []
    for _ in range(args.repeat + 1):
        r = {m: replay_once(ms, cfg, bars, overlap) for m, overlap in modes.items()}
        raw_s, scored = raw_inference(DecisionPath(ms, cfg.signals, cfg.risk), bars)
        rounds.append((r, raw_s))
    first_round, steady = rounds[0][0], rounds[1:]
    cold = first_round["overlapped"]
    n = cold["rows"]
    raw = sorted(raw_s for _, raw_s in steady)
    print(f"data: {', '.join(str(f) for f in folders)}: {n:,} token-minutes over "
          f"{cold['minutes']:,} minutes, {scored:,} scored; model set {ms.id} "
          f"({', '.join(cold['models'])}); blocks of {BLOCK_ROWS:,} rows; medians (ranges) "
          f"of {args.repeat} timed rounds after a first one")  # fmt: skip
    print(f"one-off warm-up (numba cache, sequence graph): {warm_s:.2f} s; first full replay (fresh memory "
          f"pages, see the README): serial {first_round['serial']['total']:.3f} s, overlapped "
          f"{cold['total']:.3f} s")  # fmt: skip
    print(f"raw ONNX Runtime, same models, same inputs and batch shapes: {np.median(raw):.3f} s "
          f"({raw[0]:.3f}-{raw[-1]:.3f}) = {n / np.median(raw):,.0f} token-min/s")  # fmt: skip
    for mode in modes:
        runs = [r[mode] for r, _ in steady]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(np.median([r[key] for r in runs]))

        def rate(key: str, runs: list[dict[str, Any]] = runs) -> str:
            vals = sorted(n / r[key] for r in runs)
            return f"{n / med(key):,.0f} token-min/s ({vals[0]:,.0f}-{vals[-1]:,.0f})"

        ratios = sorted(raw_s / r[mode]["total"] for r, raw_s in steady)
        stages = ("features", "features_wait", "inference", "decision", "simulation", "replay", "total")
        print(f"{mode}: seconds " + ", ".join(f"{k} {med(k):.3f}" for k in stages))
        print(f"  replay + simulation {rate('total')} = {np.median(ratios):.0%} "
              f"({ratios[0]:.0%}-{ratios[-1]:.0%}) of raw inference speed | everything but inference "
              f"{rate('non_inference')} | features alone {rate('features')}")  # fmt: skip

    if args.minute_loop:
        part = bars.filter(pl.col("ts") < first + timedelta(minutes=args.minute_loop))
        t0 = time.perf_counter()
        loop = replay_signals_minutewise(DecisionPath(ms, cfg.signals, cfg.risk), part, whole(part))
        loop_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bulk = replay_signals(DecisionPath(ms, cfg.signals, cfg.risk), part, whole(part))
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
