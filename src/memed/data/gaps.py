"""The gap rule, shared by every driver.

A missing bar means no trades. A gap of up to ``max_fill_minutes`` missing minutes is filled with flat,
zero-volume bars (open = high = low = close = the last close, marked ``filled``); a longer gap starts a new
*segment* for the token, and its feature state restarts with a fresh warm-up.

:func:`fill_gaps` applies the rule to a frame; the feature kernels apply the very same rule tick by tick
(``memed.features``), and a test proves both give identical features.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from memed.data.schema import BAR_COLUMNS


@dataclass(frozen=True, slots=True)
class GapRule:
    interval_minutes: int
    max_fill_minutes: int

    def __post_init__(self) -> None:
        if self.interval_minutes < 1:
            raise ValueError("interval_minutes must be >= 1")
        if self.max_fill_minutes < 0:
            raise ValueError("max_fill_minutes must be >= 0")

    @property
    def max_fill_bars(self) -> int:
        """Largest number of missing bars that is filled rather than restarting the token."""
        return self.max_fill_minutes // self.interval_minutes


def _with_gap_columns(bars: pl.DataFrame, rule: GapRule) -> pl.DataFrame:
    step = pl.col("ts").diff().over("token").dt.total_minutes()
    missing = ((step // rule.interval_minutes) - 1).fill_null(0).clip(lower_bound=0)
    restart = (missing > rule.max_fill_bars).fill_null(False)
    return bars.with_columns(
        missing.alias("_missing"),
        restart.alias("_restart"),
    )


def gap_stats(bars: pl.DataFrame, rule: GapRule) -> pl.DataFrame:
    """Per token: bars, gaps (any missing bar), filled gaps, restarting gaps, missing bars."""
    df = _with_gap_columns(bars, rule)
    return (
        df.group_by("token", maintain_order=True)
        .agg(
            pl.len().alias("bars"),
            (pl.col("_missing") > 0).sum().alias("gaps"),
            ((pl.col("_missing") > 0) & ~pl.col("_restart")).sum().alias("filled_gaps"),
            pl.col("_restart").sum().alias("restarts"),
            pl.col("_missing").sum().alias("missing_bars"),
        )
        .sort("token")
    )


def fill_gaps(bars: pl.DataFrame, rule: GapRule) -> pl.DataFrame:
    """Insert flat zero-volume bars into short gaps; number each token's segments.

    Returns the canonical columns plus ``filled`` (bool) and ``segment`` (0, 1, ... per token).
    """
    df = _with_gap_columns(bars, rule).with_columns(
        pl.col("_restart").cast(pl.Int32).cum_sum().over("token").alias("segment"),
        pl.lit(False).alias("filled"),
    )
    fill_src = df.filter((pl.col("_missing") > 0) & ~pl.col("_restart"))
    if fill_src.height:
        interval = pl.duration(minutes=rule.interval_minutes)
        # For each gap, the previous bar's state repeated at each missing timestamp.
        prev = df.select(
            "token",
            pl.col("ts").shift(1).over("token").alias("prev_ts"),
            pl.col("close").shift(1).over("token").alias("prev_close"),
            *[pl.col(c).shift(1).over("token").alias(f"prev_{c}") for c in ("liquidity", "market_cap")],
            pl.col("buys").is_not_null().shift(1).over("token").alias("has_buys"),
            pl.col("sells").is_not_null().shift(1).over("token").alias("has_sells"),
            "segment",
            "_missing",
            "_restart",
        ).filter((pl.col("_missing") > 0) & ~pl.col("_restart"))
        filled = (
            prev.with_columns(pl.int_ranges(1, pl.col("_missing") + 1).alias("k"))
            .explode("k")
            .select(
                "token",
                (pl.col("prev_ts") + interval * pl.col("k")).alias("ts"),
                *[pl.col("prev_close").alias(c) for c in ("open", "high", "low", "close")],
                pl.lit(0.0).alias("volume"),
                pl.col("prev_liquidity").alias("liquidity"),
                pl.when(pl.col("has_buys")).then(0.0).alias("buys"),
                pl.when(pl.col("has_sells")).then(0.0).alias("sells"),
                pl.col("prev_market_cap").alias("market_cap"),
                "segment",
                pl.lit(True).alias("filled"),
            )
        )
        df = pl.concat(
            [
                df.select(*BAR_COLUMNS, "segment", "filled"),
                filled.cast(df.select(*BAR_COLUMNS, "segment", "filled").schema),
            ]
        )
    return df.select(*BAR_COLUMNS, "segment", "filled").sort(["token", "ts"])
