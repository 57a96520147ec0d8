"""The canonical bar schema and its validation.

A dataset is one frame of bars sorted by ``token`` then ``ts``:

==============  ======================  =====================================================
column          type                    meaning
==============  ======================  =====================================================
token           String                  token identifier (symbol, pair or mint address)
ts              Datetime(us, UTC)       open time of the bar
open .. close   Float64, > 0            prices
volume          Float64, >= 0           traded volume in the bar
liquidity       Float64, nullable       pool liquidity, where the source has it
buys, sells     Float64, nullable       trade counts by side, where the source has them
market_cap      Float64, nullable       market capitalisation, where the source has it
==============  ======================  =====================================================

The bar interval (1 m, 5 m, 1 h ...) is a property of a dataset (:func:`infer_interval_minutes`).
Rows that break the schema are dropped and *counted by reason*: nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from memed.data.bars import BAR_REASONS, bar_verdicts
from memed.data.frames import bar_matrix

PRICE_COLUMNS = ("open", "high", "low", "close")
OPTIONAL_COLUMNS = ("liquidity", "buys", "sells", "market_cap")
BAR_SCHEMA: dict[str, pl.DataType] = {
    "token": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "liquidity": pl.Float64(),
    "buys": pl.Float64(),
    "sells": pl.Float64(),
    "market_cap": pl.Float64(),
}
BAR_COLUMNS = tuple(BAR_SCHEMA)

# Reasons a row is rejected, checked in this order (a row is counted under its first failing reason):
# a missing key, then the one bar rule (memed.data.bars: the daemon's tick parser applies it too), then
# a second bar for the same (token, ts) (the first one is kept).
REJECT_REASONS = ("missing_token_or_ts", *BAR_REASONS[1:], "duplicate_ts")


@dataclass
class Rejections:
    """Counts of rejected rows by reason."""

    counts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    """Files left out whole, by reason: a candle type (``mark``, ``funding_rate``...), ``other_timeframe``
    or ``other_token``."""

    def add(self, reason: str, n: int) -> None:
        if n:
            self.counts[reason] += n

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def skipped_text(self) -> str:
        return ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "none"

    def merge(self, other: Rejections) -> None:
        self.counts.update(other.counts)
        self.skipped.update(other.skipped)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {r: self.counts[r] for r in REJECT_REASONS if self.counts[r]}


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Add missing optional columns as nulls, cast to the canonical types, order the columns."""
    missing = [c for c in ("token", "ts", *PRICE_COLUMNS, "volume") if c not in frame.columns]
    if missing:
        raise ValueError(f"missing required column(s): {', '.join(missing)}")
    exprs = []
    for name, dtype in BAR_SCHEMA.items():
        if name in frame.columns:
            exprs.append(pl.col(name).cast(dtype, strict=name != "ts").alias(name))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return frame.select(exprs)


def validate_bars(frame: pl.DataFrame) -> tuple[pl.DataFrame, Rejections]:
    """Drop rows that break the schema; return the clean frame sorted by token, ts, and the counts.

    Bars are judged by :func:`~memed.data.bars.bar_verdicts`, the rule the daemon applies to live ticks
    (null and NaN are alike: a missing price or volume is invalid, a missing optional field is absent)."""
    rej = Rejections()
    df = conform(frame)
    keyed = df.select(pl.col("token").is_not_null() & pl.col("ts").is_not_null()).to_series()
    rej.add("missing_token_or_ts", int((~keyed).sum()))
    df = df.filter(keyed)
    verdicts = bar_verdicts(bar_matrix(df))
    for code, n in enumerate(np.bincount(verdicts, minlength=len(BAR_REASONS)).tolist()):
        if code:
            rej.add(BAR_REASONS[code], n)
    if verdicts.any():
        df = df.filter(pl.Series(verdicts == 0))
    if not _in_order(df):  # (a stable sort of rows already in order changes nothing)
        df = df.sort(["token", "ts"], maintain_order=True)
    # sorted, a repeated (token, ts) follows its first row: compared with the row before (no hashing)
    changed = [pl.col(c).ne_missing(pl.col(c).shift(1)) for c in ("token", "ts")]
    first = df.select(changed[0] | changed[1]).to_series()
    rej.add("duplicate_ts", int((~first).sum()))
    return df.filter(first), rej


def _in_order(df: pl.DataFrame) -> bool:
    """Whether the rows are already sorted by token, then ts (a third of the cost of sorting them)."""
    token, ts = pl.col("token"), pl.col("ts")
    after = (token > token.shift()) | ((token == token.shift()) & (ts >= ts.shift()))
    return bool(df.select(after.fill_null(True).all()).item())


def infer_interval_minutes(frame: pl.DataFrame) -> int:
    """The dataset's bar interval: the most common positive step between a token's consecutive bars."""
    steps = (
        frame.select((pl.col("ts").diff().over("token").dt.total_seconds() // 60).alias("step"))
        .filter(pl.col("step") > 0)
        .to_series()
    )
    if steps.is_empty():
        return 1
    return int(steps.mode().min())  # type: ignore[arg-type]
