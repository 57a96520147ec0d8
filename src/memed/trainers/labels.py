"""Direction labels per horizon, and the past returns the rule baselines use.

``up_h(t) = close(t+h) > close(t)``, where ``close(t+h)`` is the last close at or before ``t+h`` (a
missing bar means no trade, so the price stands). Ties — equal closes, common in memecoins — are null
(``ties="exclude"``) or 0 (``ties="down"``). A label whose ``t+h`` lies past the token's last bar is null.

``past_h(t)`` is ``log close(t) - log close(t-h)`` (null before the token's first bar): persistence
predicts its sign continues, reversal that it flips. ``fwd_h(t)`` is ``log close(t+h) - log close(t)``
(null where the label is unknown): the move a trade at ``t`` held for ``h`` would have made, which the
cost-aware policy is fitted on (validation rows only).
"""

from __future__ import annotations

from typing import Literal

import polars as pl


def label_col(h: int) -> str:
    return f"y_{h}"


def past_col(h: int) -> str:
    return f"past_{h}"


def fwd_col(h: int) -> str:
    return f"fwd_{h}"


def usable_horizons(horizons: tuple[int, ...] | list[int], interval_minutes: int) -> list[int]:
    """Horizons that are whole multiples of the bar interval (the others have no label)."""
    return [h for h in horizons if h % interval_minutes == 0 and h >= interval_minutes]


def _close_at(frame: pl.DataFrame, shift_minutes: int, name: str) -> pl.Series:
    """For each row, the token's last close at or before ``ts + shift_minutes`` (aligned to ``frame``)."""
    left = frame.select(
        pl.int_range(pl.len()).alias("_row"),
        "token",
        (pl.col("ts") + pl.duration(minutes=shift_minutes)).alias("_at"),
    ).sort("_at")
    right = frame.select("token", pl.col("ts").alias("_at"), pl.col("close").alias(name)).sort("_at")
    joined = left.join_asof(right, on="_at", by="token", strategy="backward", check_sortedness=False)
    return joined.sort("_row")[name]


def add_labels(
    frame: pl.DataFrame, horizons: list[int], ties: Literal["exclude", "down"] = "exclude"
) -> pl.DataFrame:
    """Add ``y_<h>`` (Float64: 1 up, 0 down, null unknown/tie) and ``past_<h>`` for each horizon.

    ``frame`` needs ``token, ts, close`` (one row per bar, any order).
    """
    last_ts = pl.col("ts").max().over("token")
    first_ts = pl.col("ts").min().over("token")
    cols: list[pl.Expr] = []
    for h in horizons:
        fut = _close_at(frame, h, "_fut")
        past = _close_at(frame, -h, "_past")
        known = pl.col("ts") + pl.duration(minutes=h) <= last_ts
        up: pl.Expr = (
            pl.when(fut > pl.col("close"))
            .then(1.0)
            .when(fut < pl.col("close"))
            .then(0.0)
            .otherwise(None if ties == "exclude" else 0.0)
        )
        cols.append(pl.when(known).then(up).otherwise(None).cast(pl.Float64).alias(label_col(h)))
        cols.append(pl.when(known).then(fut.log() - pl.col("close").log()).otherwise(None).alias(fwd_col(h)))
        seen = pl.col("ts") - pl.duration(minutes=h) >= first_ts
        cols.append(pl.when(seen).then(pl.col("close").log() - past.log()).otherwise(None).alias(past_col(h)))
    return frame.with_columns(cols)
