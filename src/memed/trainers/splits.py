"""Train / validation / test splits: one calendar cut for every token, with an embargo.

Crypto tokens share a calendar: a model that saw any token in a week has seen that week's market. So
every strategy cuts *all* tokens at the same two global times ``A`` and ``B`` (the times below which
``train_fraction`` and ``train_fraction + val_fraction`` of all rows lie: :func:`calendar_cuts`), and a
row belongs to a part only if its label window ``[t, t + H]`` (``H`` = the longest horizon, the embargo)
ends before the next part begins:

* train: ``t + H < A``; validation: ``A <= t`` and ``t + H < B``; test: ``t >= B``.

The strategies differ only in which tokens may take each part:

* ``temporal`` (default): every token takes every part.
* ``token``: whole tokens per part (a seeded hash of the token decides); a test token is used only after
  ``B``, so held-out tokens are unseen tokens *in unseen time* (their rows before ``B`` are dropped).
* ``mixed``: ``mixed_holdout_tokens`` of the tokens are held out (test rows only, after ``B``); the
  others take every part.

Rows in no part (the embargo, and the held-out parts of a token) are null. No training or validation
label can see the test period, whichever strategy: :func:`embargo_violations` counts the rows that would.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

import polars as pl

SPLITS = ("train", "val", "test")


def _token_unit(token: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{token}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_splits(
    frame: pl.DataFrame,
    *,
    strategy: Literal["temporal", "token", "mixed"] = "temporal",
    train_fraction: float = 0.6,
    val_fraction: float = 0.2,
    embargo_minutes: int = 0,
    holdout_tokens: float = 0.2,
    seed: int = 0,
) -> pl.Series:
    """The split of each row of ``frame`` (``token, ts``): "train", "val", "test" or null."""
    tokens = frame["token"].unique().to_list()
    units = pl.DataFrame(
        {"token": tokens, "_u": [_token_unit(t, seed) for t in tokens]},
        schema={"token": frame.schema["token"], "_u": pl.Float64},
    )
    df = frame.select(pl.int_range(pl.len()).alias("_row"), "token", "ts").join(units, on="token")
    a, b = calendar_cuts(frame["ts"], train_fraction, train_fraction + val_fraction)
    ts, h = pl.col("ts"), pl.duration(minutes=embargo_minutes)
    part = (
        pl.when(ts + h < a)
        .then(pl.lit("train"))
        .when((ts >= a) & (ts + h < b))
        .then(pl.lit("val"))
        .when(ts >= b)
        .then(pl.lit("test"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    u = pl.col("_u")
    if strategy == "token":  # the token's own part, and only in that part's time
        own = (
            pl.when(u < train_fraction)
            .then(pl.lit("train"))
            .when(u < train_fraction + val_fraction)
            .then(pl.lit("val"))
            .otherwise(pl.lit("test"))
        )
        part = pl.when(part == own).then(part).otherwise(pl.lit(None, dtype=pl.String))
    elif strategy == "mixed":  # held-out tokens: test rows only
        part = (
            pl.when((u < holdout_tokens) & (part != "test"))
            .then(pl.lit(None, dtype=pl.String))
            .otherwise(part)
        )
    return df.with_columns(part.alias("split")).sort("_row")["split"]


def calendar_cuts(ts: pl.Series, *fractions: float) -> list[datetime]:
    """The global times below which these fractions of all rows lie (every token's rows together): cuts
    by data mass, not by the calendar's span, so that sets from different eras (a 2017 file beside 2026
    ones) do not leave a part empty."""
    ordered = ts.sort()
    n = len(ordered)
    out = []
    for f in fractions:
        at = ordered[min(int(f * n), n - 1)] if n else datetime.fromtimestamp(0, UTC)
        assert isinstance(at, datetime)
        out.append(at)
    return out


def embargo_violations(frame: pl.DataFrame, split: pl.Series, embargo_minutes: int) -> int:
    """Rows of an earlier part whose label window ``[t, t + embargo]`` reaches the first row of a later
    part, across all tokens (the calendar is shared). 0 for a correct split; a test plans one without the
    embargo and sees this count rise."""
    df = frame.select("ts").with_columns(split.alias("split")).drop_nulls("split")
    first = dict(df.group_by("split").agg(pl.col("ts").min()).iter_rows())
    total = 0
    for earlier, later in (("train", "val"), ("train", "test"), ("val", "test")):
        if earlier in first and later in first:
            reach = pl.col("ts") + pl.duration(minutes=embargo_minutes)
            total += df.filter((pl.col("split") == earlier) & (reach >= first[later])).height
    return total
