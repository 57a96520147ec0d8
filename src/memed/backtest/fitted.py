"""The fitted 2-feature baseline in the backtest: fit, for each group of folds, on the rows of its
training window (the window a retrained set learns from; for a fixed set, the first fold's), and
scored on the group's test rows, beside the model."""

from __future__ import annotations

import numpy as np
import polars as pl

from memed.backtest.folds import fold_groups
from memed.backtest.plan import Fold
from memed.features import build_spec, compute_features
from memed.trainers.baseline import FittedBaseline, baseline_features


def fitted_baseline_p(
    bars: pl.DataFrame,
    signals: pl.DataFrame,
    labelled: pl.DataFrame,
    folds: list[Fold],
    *,
    fixed_models: bool,
    interval_minutes: int,
    gap_fill_max_minutes: int,
    horizons: list[int],
    l2: float = 1.0,
) -> tuple[tuple[str, ...], np.ndarray]:
    """The baseline's features and its ``p_up`` [signal rows, H], in ``signals``' order (NaN where a row
    has no feature value)."""
    spec = build_spec(interval_minutes, gap_fill_max_minutes)
    chosen = baseline_features(spec.names)
    feats = compute_features(bars, spec, with_ready=True).select("token", "ts", "ready", *chosen)
    ys = [f"y_{h}" for h in horizons]
    table = feats.filter(pl.col("ready")).join(labelled.select("token", "ts", *ys), on=["token", "ts"])
    rows = signals.select("token", "ts", "fold").join(
        feats, on=["token", "ts"], how="left", maintain_order="left"
    )
    x = rows.select(chosen).to_numpy().astype(np.float64)
    fold = rows["fold"].to_numpy()
    out = np.full((signals.height, len(horizons)), np.nan)
    for group in fold_groups(folds, fixed_models):
        first = group[0]
        train = table.filter((pl.col("ts") >= first.train_start) & (pl.col("ts") < first.train_end))
        if train.is_empty():
            continue
        model = FittedBaseline.fit(chosen, train.select(chosen).to_numpy(), train.select(ys).to_numpy(), l2)
        at = np.isin(fold, [f.index for f in group]) & np.isfinite(x).all(axis=1)
        if at.any():
            out[at] = model.predict(x[at])
    return chosen, out
