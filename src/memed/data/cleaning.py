"""Dead tails and token categories.

A *dead tail* is a token's final run of constant close lasting at least ``min_minutes``: the token
stopped trading. Its labels are trivially predictable (the price never moves again), so trainers cut
it, keeping the first ``keep`` bars of the run. Tails leak; they are the classic source of 85-90 %
"accuracy" on memecoins.

Every token falls in exactly one category, by the first rule that matches in the order
``gaps > normal > extremes > dead``:

* ``gaps`` — more than ``gap_fraction`` of its bars are missing;
* ``normal`` — no extreme move and no dead tail;
* ``extremes`` — some bar-to-bar |log return| exceeds ``extreme_log_return``;
* ``dead`` — what remains: a dead tail without extreme moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from memed.data.gaps import GapRule, gap_stats

CATEGORIES = ("gaps", "normal", "extremes", "dead")


@dataclass(frozen=True, slots=True)
class CleaningRule:
    dead_tail_minutes: int = 60
    dead_tail_keep: int = 2
    extreme_log_return: float = 0.7
    gap_fraction: float = 0.05


def _tail_columns(bars: pl.DataFrame) -> pl.DataFrame:
    """Adds ``_run`` (id of the constant-close run), ``_in_tail``, ``_tail_pos`` and ``_tail_min``."""
    changed = (pl.col("close") != pl.col("close").shift(1)).over("token").fill_null(True)
    df = bars.with_columns(changed.cast(pl.Int32).cum_sum().over("token").alias("_run"))
    last_run = pl.col("_run").max().over("token")
    df = df.with_columns((pl.col("_run") == last_run).alias("_in_tail"))
    tail_start = pl.col("ts").filter(pl.col("_in_tail")).min().over("token")
    tail_end = pl.col("ts").filter(pl.col("_in_tail")).max().over("token")
    return df.with_columns(
        (tail_end - tail_start).dt.total_minutes().alias("_tail_min"),
        pl.int_range(pl.len()).over("token", "_run").alias("_tail_pos"),
    )


def dead_tail_minutes(bars: pl.DataFrame) -> pl.DataFrame:
    """Per token, the length in minutes of its final constant-close run."""
    return (
        _tail_columns(bars.sort("token", "ts"))
        .group_by("token", maintain_order=True)
        .agg(pl.col("_tail_min").first().alias("tail_minutes"))
    )


def cut_dead_tails(bars: pl.DataFrame, rule: CleaningRule) -> tuple[pl.DataFrame, int]:
    """Drop dead tails (keeping ``rule.dead_tail_keep`` bars of each); returns the frame and rows cut."""
    df = _tail_columns(bars.sort("token", "ts"))
    dead = pl.col("_in_tail") & (pl.col("_tail_min") >= rule.dead_tail_minutes)
    drop = dead & (pl.col("_tail_pos") >= rule.dead_tail_keep)
    kept = df.filter(~drop).drop("_run", "_in_tail", "_tail_pos", "_tail_min")
    return kept, bars.height - kept.height


def categorize(bars: pl.DataFrame, rule: CleaningRule, gap_rule: GapRule) -> pl.DataFrame:
    """One row per token: category, bars, missing fraction, largest |log return|, dead-tail minutes."""
    bars = bars.sort("token", "ts")
    gaps = gap_stats(bars, gap_rule).select("token", "bars", "missing_bars")
    moves = bars.group_by("token", maintain_order=True).agg(
        pl.col("close").log().diff().abs().max().fill_null(0.0).alias("max_abs_logret")
    )
    table = gaps.join(moves, on="token").join(dead_tail_minutes(bars), on="token")
    missing_frac = pl.col("missing_bars") / (pl.col("bars") + pl.col("missing_bars"))
    extreme = pl.col("max_abs_logret") > rule.extreme_log_return
    dead = pl.col("tail_minutes") >= rule.dead_tail_minutes
    category = (
        pl.when(missing_frac > rule.gap_fraction)
        .then(pl.lit("gaps"))
        .when(~extreme & ~dead)
        .then(pl.lit("normal"))
        .when(extreme)
        .then(pl.lit("extremes"))
        .otherwise(pl.lit("dead"))
    )
    return table.with_columns(
        category.cast(pl.Enum(list(CATEGORIES))).alias("category"),
        missing_frac.alias("missing_fraction"),
    ).select("token", "category", "bars", "missing_fraction", "max_abs_logret", "tail_minutes")
