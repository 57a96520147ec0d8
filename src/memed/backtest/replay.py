"""Replay history through the daemon's decision path, minute by minute, exactly as the daemon would.

The path sees every bar from the data's start (its features, LSTM state and dead detection warm up on
the past as a long-running daemon's would); only the signals inside the test windows are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import polars as pl

from memed.features.batch import bar_matrix, epoch_minutes, run_bounds
from memed.pipeline import DecisionPath
from memed.signals.policy import ACTIONS, REASONS

SIGNAL_COLUMNS = ("entry", "stop_loss", "take_profit", "units", "notional", "risk_reward")


def replay_signals(
    path: DecisionPath,
    bars: pl.DataFrame,
    windows: list[tuple[datetime, datetime]],
    on_minute: Callable[[int, int], None] | None = None,
) -> pl.DataFrame:
    """Signals (one row per token and minute inside ``windows``, ``[start, end)``)."""
    bars = bars.filter(pl.col("ts") < max(w[1] for w in windows)).sort("ts", "token")
    ts = epoch_minutes(bars["ts"])
    x = bar_matrix(bars)
    tokens = bars["token"].to_list()
    bounds = run_bounds(ts)
    win = [(w[0].timestamp() / 60, w[1].timestamp() / 60) for w in windows]
    parts: dict[str, list[np.ndarray]] = {}
    toks: list[str] = []
    total = len(bounds) - 1
    for i in range(total):
        a, b = int(bounds[i]), int(bounds[i + 1])
        minute = float(ts[a])
        r = path.process(tokens[a:b], minute, np.ascontiguousarray(x[:, a:b]))
        if any(lo <= minute < hi for lo, hi in win) and r.tokens:
            toks.extend(r.tokens)
            cols = {
                "ts_min": np.full(len(r.tokens), minute),
                "action": r.action,
                "reason": r.reason,
                "p_up": r.p,
                "strength": r.strength,
                "atr": r.atr,
                "recent_notional": r.recent_notional,
                "close": r.close,
                **{c: getattr(r.risk, c) for c in SIGNAL_COLUMNS},
                **{f"p_{h}": r.horizon_p[:, k] for k, h in enumerate(r.horizons)},
            }
            for k, v in cols.items():
                parts.setdefault(k, []).append(np.asarray(v))
        if on_minute is not None:
            on_minute(i + 1, total)
    if not toks:
        return pl.DataFrame()
    data = {k: np.concatenate(v) for k, v in parts.items()}
    frame = pl.DataFrame({"token": toks, **data})
    return (
        frame.with_columns(
            (pl.col("ts_min") * 60_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias("ts"),
            pl.col("action").map_elements(lambda a: ACTIONS[a], return_dtype=pl.String).alias("action"),
            pl.col("reason").map_elements(lambda a: REASONS[a], return_dtype=pl.String).alias("reason"),
            pl.lit(path.model_set.id).alias("model_set"),
        )
        .drop("ts_min")
        .select("token", "ts", pl.exclude("token", "ts"))
    )
