"""The training table: bars → cleaned, categorised → features (the engine's batch driver) → labels → splits.

One row per input bar that the daemon would score (the token's segment is past warm-up), with the spec's
features in spec order, ``close``, ``y_<h>`` / ``past_<h>`` per horizon, ``split`` and ``run`` (the id of
the uninterrupted stretch of ready bars: stateful models restart at each new run, as in serving).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from memed.config import MemedConfig
from memed.data.cleaning import CleaningRule, categorize, cut_dead_tails
from memed.data.gaps import GapRule
from memed.data.loaders import expand_sources, load_dataset
from memed.data.schema import infer_interval_minutes
from memed.errors import DataError
from memed.features import FeatureSpec, build_spec, compute_features
from memed.trainers.labels import add_labels, fwd_col, label_col, past_col, usable_horizons
from memed.trainers.splits import assign_splits


@dataclass
class TrainingData:
    frame: pl.DataFrame
    spec: FeatureSpec
    horizons: list[int]
    interval_minutes: int
    files: list[str]
    categories: dict[str, int] = field(default_factory=dict)
    dead_tail_rows_cut: int = 0
    embargo_minutes: int = 0

    def x(self, mask: pl.Series | None = None) -> np.ndarray:
        frame = self.frame if mask is None else self.frame.filter(mask)
        return np.ascontiguousarray(frame.select(self.spec.names).to_numpy().astype(np.float64))

    def y(self, mask: pl.Series | None = None) -> np.ndarray:
        """Labels [N, H] (NaN: tie or unknown)."""
        frame = self.frame if mask is None else self.frame.filter(mask)
        cols = [label_col(h) for h in self.horizons]
        return frame.select(cols).to_numpy().astype(np.float64)

    def past(self, mask: pl.Series | None = None) -> np.ndarray:
        frame = self.frame if mask is None else self.frame.filter(mask)
        return frame.select([past_col(h) for h in self.horizons]).to_numpy().astype(np.float64)

    def fwd(self, h: int, mask: pl.Series | None = None) -> np.ndarray:
        """Forward log returns at horizon ``h`` (NaN: unknown)."""
        frame = self.frame if mask is None else self.frame.filter(mask)
        return frame[fwd_col(h)].to_numpy().astype(np.float64)

    def split_mask(self, name: str) -> pl.Series:
        return (self.frame["split"] == name).fill_null(False)


def cleaning_rule(cfg: MemedConfig) -> CleaningRule:
    t = cfg.train
    return CleaningRule(t.dead_tail_minutes, t.dead_tail_keep, t.extreme_log_return, t.gap_fraction)


def prepare_bars(bars: pl.DataFrame, cfg: MemedConfig) -> tuple[pl.DataFrame, pl.DataFrame, int, int]:
    """Select the configured token categories and cut dead tails.

    Returns ``(bars, category table, rows cut, interval minutes)``.
    """
    interval = infer_interval_minutes(bars)
    table = categorize(bars, cleaning_rule(cfg), GapRule(interval, cfg.data.gap_fill_max_minutes))
    keep = table.filter(pl.col("category").cast(pl.String).is_in(list(cfg.train.categories)))["token"]
    bars = bars.filter(pl.col("token").is_in(keep.implode()))
    bars, cut = cut_dead_tails(bars, cleaning_rule(cfg))
    return bars, table, cut, interval


def build_training_data(sources: Iterable[str | Path], cfg: MemedConfig) -> TrainingData:
    files = [str(p) for p in expand_sources(sources)]
    raw, _ = load_dataset(files, cfg.data.selection())
    bars, table, cut, interval = prepare_bars(raw, cfg)
    if bars.is_empty():
        raise DataError("no bars left after selecting categories and cutting dead tails")
    horizons = usable_horizons(cfg.train.horizons, interval)
    if not horizons:
        raise DataError(f"no configured horizon is a multiple of the {interval}-minute bar interval")
    spec = build_spec(interval, *cfg.data.spec_args())
    if spec.market:
        # the market is every token the feed carries (as the daemon sees it), not only the ones trained on
        feats = compute_features(raw, spec, with_ready=True).join(
            bars.select("token", "ts"), on=["token", "ts"], how="semi", maintain_order="left"
        )
        if feats.height != bars.height:
            raise DataError(f"market context: {feats.height:,} feature rows for {bars.height:,} bars")
    else:
        feats = compute_features(bars, spec, with_ready=True)
    labelled = add_labels(
        bars.select("token", "ts", "open", "high", "low", "close"), horizons, cfg.train.ties
    )
    frame = pl.concat([feats, labelled.drop("token", "ts")], how="horizontal")
    embargo = max(horizons)
    t = cfg.train
    frame = frame.with_columns(
        assign_splits(
            frame, strategy=t.split, train_fraction=t.train_fraction, val_fraction=t.val_fraction,
            embargo_minutes=embargo, holdout_tokens=t.mixed_holdout_tokens, seed=t.seed,
        ).alias("split")
    )  # fmt: skip
    new_run = (pl.col("token") != pl.col("token").shift(1)).fill_null(True) | (
        pl.col("ready") & ~pl.col("ready").shift(1).fill_null(False)
    )
    frame = frame.with_columns(new_run.cast(pl.Int64).cum_sum().alias("run")).filter(pl.col("ready"))
    if frame.is_empty():
        lengths = bars.group_by("token").len()["len"].to_numpy()
        raise DataError(
            f"no token reaches the feature warm-up of {spec.warmup_bars} bars (the seeded averages' "
            f"convergence horizon, {spec.warmup_bars * interval / 60:.1f} h of {interval}-minute bars): "
            f"{len(lengths)} tokens, {int(np.median(lengths))} bars at the median, "
            f"{int(lengths.max())} at most"
        )
    counts = table["category"].cast(pl.String).value_counts()
    return TrainingData(
        frame=frame,
        spec=spec,
        horizons=horizons,
        interval_minutes=interval,
        files=files,
        categories={str(k): int(v) for k, v in counts.iter_rows()},
        dead_tail_rows_cut=cut,
        embargo_minutes=embargo,
    )
