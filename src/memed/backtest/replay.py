"""Replay history through the daemon's decision path.

:func:`replay_signals` decides every bar at once with :meth:`DecisionPath.process_history` (the bulk form
of the daemon's minute loop); :func:`replay_signals_minutewise` feeds the same bars minute by minute
through :meth:`DecisionPath.process`, exactly as the daemon does, and is the reference the bulk form is
tested against. Either way the path sees every bar from the data's start (features, LSTM state and dead
detection warm up on the past as a long-running daemon's would); only the signals inside the test
windows are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import polars as pl

from memed.data.frames import bar_matrix, epoch_minutes, minutes_to_datetime, run_bounds
from memed.decision import BLOCK_ROWS, DecisionPath
from memed.signals.policy import ACTIONS, REASONS, SIDES


def _frame(
    tokens: pl.Series, ts_min: np.ndarray, cols: dict[str, np.ndarray], model_set: str
) -> pl.DataFrame:
    """The signals frame of rows already sorted by time then token."""
    actions = pl.Series(ACTIONS, dtype=pl.String)
    reasons = pl.Series(REASONS, dtype=pl.String)
    sides = pl.Series(SIDES, dtype=pl.String)
    frame = pl.DataFrame({"token": tokens, "ts_min": ts_min, **cols})
    return (
        frame.with_columns(
            minutes_to_datetime("ts_min").alias("ts"),
            actions.gather(frame["action"].cast(pl.Int64)).alias("action"),
            reasons.gather(frame["reason"].cast(pl.Int64)).alias("reason"),
            sides.gather(frame["side"].cast(pl.Int64)).alias("side"),
            pl.lit(model_set).alias("model_set"),
        )
        .drop("ts_min")
        .select("token", "ts", pl.exclude("token", "ts"))
    )


def _in_windows(ts_min: np.ndarray, windows: list[tuple[datetime, datetime]]) -> np.ndarray:
    inside = np.zeros(len(ts_min), dtype=bool)
    for lo, hi in windows:
        inside |= (ts_min >= lo.timestamp() / 60) & (ts_min < hi.timestamp() / 60)
    return inside


def replay_signals(
    path: DecisionPath,
    bars: pl.DataFrame,
    windows: list[tuple[datetime, datetime]],
    *,
    block_rows: int = BLOCK_ROWS,
    overlap: bool = True,
) -> pl.DataFrame:
    """Signals (one row per token and minute inside ``windows``, ``[start, end)``), sorted by time then
    token, decided in bulk by :meth:`DecisionPath.process_history` (``block_rows`` and ``overlap`` as
    there)."""
    r = path.process_history(
        bars.filter(pl.col("ts") < max(w[1] for w in windows)), block_rows=block_rows, overlap=overlap
    )
    keep = _in_windows(r.ts_minutes, windows)
    if not keep.any():
        return pl.DataFrame()
    if keep.all():  # the usual case (one window over the data): no copies
        return _frame(r.tokens, r.ts_minutes, r.columns(), r.model_set)
    cols = {k: v[keep] for k, v in r.columns().items()}
    return _frame(r.tokens.filter(pl.Series(keep)), r.ts_minutes[keep], cols, r.model_set)


def replay_signals_minutewise(
    path: DecisionPath,
    bars: pl.DataFrame,
    windows: list[tuple[datetime, datetime]],
    on_minute: Callable[[int, int], None] | None = None,
) -> pl.DataFrame:
    """As :func:`replay_signals`, one :meth:`DecisionPath.process` call per event-time minute."""
    bars = bars.filter(pl.col("ts") < max(w[1] for w in windows)).sort("ts", "token", maintain_order=True)
    ts = epoch_minutes(bars["ts"])
    x = bar_matrix(bars)
    tokens = bars["token"].to_list()
    bounds = run_bounds(ts)
    parts: dict[str, list[np.ndarray]] = {}
    toks: list[str] = []
    times: list[np.ndarray] = []
    total = len(bounds) - 1
    for i in range(total):
        a, b = int(bounds[i]), int(bounds[i + 1])
        minute = float(ts[a])
        r = path.process(tokens[a:b], minute, np.ascontiguousarray(x[:, a:b]))
        if len(r) and _in_windows(np.array([minute]), windows)[0]:
            toks.extend(r.tokens.to_list())
            times.append(r.ts_minutes)
            for k, v in r.columns().items():
                parts.setdefault(k, []).append(np.asarray(v))
        if on_minute is not None:
            on_minute(i + 1, total)
    if not toks:
        return pl.DataFrame()
    cols = {k: np.concatenate(v) for k, v in parts.items()}
    return _frame(pl.Series(toks, dtype=pl.String), np.concatenate(times), cols, path.model_set.id)
