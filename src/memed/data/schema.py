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

import polars as pl

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

# Reasons a row is rejected, checked in this order (a row is counted under its first failing reason).
REJECT_REASONS = (
    "missing_token_or_ts",
    "bad_price",  # null, NaN, infinite or non-positive open/high/low/close
    "high_below_low",
    "bad_volume",  # null, NaN, infinite or negative volume
    "bad_optional",  # negative or non-finite liquidity/buys/sells/market_cap
    "duplicate_ts",  # a second bar for the same (token, ts); the first one is kept
)


@dataclass
class Rejections:
    """Counts of rejected rows by reason."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str, n: int) -> None:
        if n:
            self.counts[reason] += n

    def merge(self, other: Rejections) -> None:
        self.counts.update(other.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {r: self.counts[r] for r in REJECT_REASONS if self.counts[r]}


def _finite_positive(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_not_null() & c.is_finite() & (c > 0)


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
    """Drop rows that break the schema; return the clean frame sorted by token, ts, and the counts."""
    rej = Rejections()
    df = conform(frame)
    checks: list[tuple[str, pl.Expr]] = [
        ("missing_token_or_ts", pl.col("token").is_not_null() & pl.col("ts").is_not_null()),
        ("bad_price", pl.all_horizontal([_finite_positive(c) for c in PRICE_COLUMNS])),
        ("high_below_low", pl.col("high") >= pl.col("low")),
        (
            "bad_volume",
            pl.col("volume").is_not_null() & pl.col("volume").is_finite() & (pl.col("volume") >= 0),
        ),
        (
            "bad_optional",
            pl.all_horizontal(
                [pl.col(c).is_null() | (pl.col(c).is_finite() & (pl.col(c) >= 0)) for c in OPTIONAL_COLUMNS]
            ),
        ),
    ]
    for reason, ok in checks:
        keep = df.select(ok.fill_null(False)).to_series()
        rej.add(reason, int((~keep).sum()))
        df = df.filter(keep)
    df = df.sort(["token", "ts"], maintain_order=True)
    dup = df.select(pl.struct("token", "ts").is_first_distinct()).to_series()
    rej.add("duplicate_ts", int((~dup).sum()))
    return df.filter(dup), rej


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
