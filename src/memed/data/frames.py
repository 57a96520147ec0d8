"""Frame and time helpers shared by every layer: epoch minutes, token runs, the bar matrix."""

from __future__ import annotations

import numpy as np
import polars as pl
from numba import njit

from memed.data.bars import BAR_FIELDS


def epoch_minutes(ts: pl.Series) -> np.ndarray:
    """UTC timestamps as float64 epoch minutes (exact for any realistic date), read-only.

    Read-only whether polars hands out a view of its memory or a copy (it copies a series in several
    chunks), so a compiled loop taking them has one signature: each combination of flags is compiled on
    its first use (seconds), and a Parquet file and a folder of feather files gave the two."""
    minutes: np.ndarray = (ts.dt.epoch("s") // 60).cast(pl.Float64).to_numpy()
    minutes.flags.writeable = False
    return minutes


def minutes_to_datetime(col: str) -> pl.Expr:
    """Column ``col`` of epoch minutes (:func:`epoch_minutes`) back as UTC timestamps, named ``col``."""
    return (pl.col(col) * 60_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias(col)


def run_bounds(keys: np.ndarray) -> np.ndarray:
    """Start offsets of each run of equal consecutive ``keys``, plus ``len(keys)`` at the end
    (``itertools.pairwise`` over it gives each run's slice): minutes of a time-sorted frame, runs of a
    training table."""
    keys = np.asarray(keys)
    bounds: np.ndarray = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1, len(keys)].astype(np.int64)
    return bounds


def bar_matrix(bars: pl.DataFrame) -> np.ndarray:
    """A frame's bars as a (9, rows) float64 matrix in :data:`~memed.data.bars.BAR_FIELDS` order; null or
    absent optional columns -> NaN."""
    cols = [
        (pl.col(c) if c in bars.columns else pl.lit(None)).cast(pl.Float64).fill_null(np.nan).alias(c)
        for c in BAR_FIELDS
    ]
    return np.ascontiguousarray(bars.select(cols).to_numpy().T)


def token_starts(tokens: pl.Series) -> np.ndarray:
    """Row offsets where each token's rows begin in a frame sorted by token, plus the row count."""
    lengths = tokens.rle().struct.field("len").to_numpy() if len(tokens) else np.zeros(0, dtype=np.int64)
    starts: np.ndarray = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return starts


@njit(cache=True)
def _times_ascend(starts: np.ndarray, t: np.ndarray) -> bool:
    for g in range(len(starts) - 1):
        for i in range(starts[g] + 1, starts[g + 1]):
            if t[i] < t[i - 1]:
                return False
    return True


def by_token(bars: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """``bars`` sorted by token then time (stably), and :func:`token_starts` of the result. A frame
    already in that order, as loaded datasets are, is returned as it is (checking costs well under a
    millisecond per 100k rows; sorting, a few)."""
    starts = token_starts(bars["token"])
    if not (bars["token"].is_sorted() and _times_ascend(starts, bars["ts"].to_physical().to_numpy())):
        bars = bars.sort("token", "ts", maintain_order=True)
        starts = token_starts(bars["token"])
    return bars, starts
