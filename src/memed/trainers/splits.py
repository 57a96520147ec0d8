"""Train / validation / test splits with an embargo.

* ``temporal`` (default): each token's time span is cut at ``train_fraction`` and
  ``train_fraction + val_fraction``. A row belongs to a part only if its label window ``[t, t+H]``
  (``H`` = the longest horizon) ends before the next part starts: rows in the embargo are dropped, so no
  training label sees the validation or test period.
* ``token``: whole tokens per part (a seeded hash of the token decides); no embargo is needed.
* ``mixed``: ``mixed_holdout_tokens`` of the tokens go wholly to test; the others split in time.
"""

from __future__ import annotations

import hashlib
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
    """The split of each row of ``frame`` (``token, ts``): "train", "val", "test" or null (embargoed)."""
    tokens = frame["token"].unique().to_list()
    units = pl.DataFrame(
        {"token": tokens, "_u": [_token_unit(t, seed) for t in tokens]},
        schema={"token": frame.schema["token"], "_u": pl.Float64},
    )
    df = frame.select(pl.int_range(pl.len()).alias("_row"), "token", "ts").join(units, on="token")
    cut_val = train_fraction
    cut_test = train_fraction + val_fraction
    if strategy == "token":
        split = (
            pl.when(pl.col("_u") < cut_val)
            .then(pl.lit("train"))
            .when(pl.col("_u") < cut_test)
            .then(pl.lit("val"))
            .otherwise(pl.lit("test"))
        )
        return df.with_columns(split.alias("split")).sort("_row")["split"]
    t0 = pl.col("ts").min().over("token")
    span = pl.col("ts").max().over("token") - t0
    a = t0 + span * cut_val
    b = t0 + span * cut_test
    h = pl.duration(minutes=embargo_minutes)
    ts = pl.col("ts")
    split = (
        pl.when((ts + h < a) & (ts < a))
        .then(pl.lit("train"))
        .when((ts >= a) & (ts + h < b) & (ts < b))
        .then(pl.lit("val"))
        .when(ts >= b)
        .then(pl.lit("test"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    if strategy == "mixed":
        split = pl.when(pl.col("_u") < holdout_tokens).then(pl.lit("test")).otherwise(split)
    return df.with_columns(split.alias("split")).sort("_row")["split"]


def embargo_violations(frame: pl.DataFrame, split: pl.Series, embargo_minutes: int) -> int:
    """Rows of an earlier part whose label window reaches into a later part of the same token.

    0 for a correct plan; a test plans a split without the embargo and sees this count rise.
    """
    df = frame.select("token", "ts").with_columns(split.alias("split")).drop_nulls("split")
    starts = df.group_by("token", "split").agg(pl.col("ts").min().alias("start"))
    total = 0
    for earlier, later in (("train", "val"), ("train", "test"), ("val", "test")):
        nxt = starts.filter(pl.col("split") == later).select("token", pl.col("start").alias("_next"))
        rows = df.filter(pl.col("split") == earlier).join(nxt, on="token")
        total += rows.filter(
            (pl.col("ts") + pl.duration(minutes=embargo_minutes) >= pl.col("_next"))
            & (pl.col("ts") < pl.col("_next"))
        ).height
    return total
