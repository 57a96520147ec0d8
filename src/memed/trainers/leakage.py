"""Leakage guards: the truncation (look-ahead) check, the start-truncation check and the constant-feature
check.

The look-ahead check recomputes features on data truncated at many cut points and demands that every
value at or before a cut equals the value computed on the full history. A feature that peeks at the
future changes when the future is removed, and is caught. ``feature_fn`` is injectable so a test can
plant a peeking feature and see the guard fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

FeatureFn = Callable[[pl.DataFrame], pl.DataFrame]


@dataclass
class LookaheadReport:
    cuts: int = 0
    rows_checked: int = 0
    violations: dict[str, int] = field(default_factory=dict)  # feature -> rows that changed

    @property
    def ok(self) -> bool:
        return not self.violations


def check_lookahead(bars: pl.DataFrame, feature_fn: FeatureFn, cuts: int = 12) -> LookaheadReport:
    """Compare features on ``bars`` truncated at ``cuts`` evenly spaced timestamps with the full run."""
    bars = bars.sort("token", "ts")
    full = feature_fn(bars)
    names = [c for c in full.columns if c not in ("token", "ts")]
    ts_sorted = bars["ts"].unique().sort()
    picks = np.unique(np.linspace(0, len(ts_sorted) - 1, cuts + 2).astype(int)[1:-1])
    report = LookaheadReport()
    for i in picks:
        cut = ts_sorted[int(i)]
        part = feature_fn(bars.filter(pl.col("ts") <= cut))
        ref = full.filter(pl.col("ts") <= cut)
        report.cuts += 1
        report.rows_checked += part.height
        for name in names:
            a = part[name].cast(pl.Float64).to_numpy()
            b = ref[name].cast(pl.Float64).to_numpy()
            same = (a == b) | (np.isnan(a) & np.isnan(b))
            bad = int(np.sum(~same))
            if bad:
                report.violations[name] = report.violations.get(name, 0) + bad
    return report


def constant_features(frame: pl.DataFrame, names: list[str]) -> list[str]:
    """Features with at most one distinct non-null value in ``frame`` (all-null included).

    A constant feature carries no information; on a training split it often means a broken source column
    or a dead tail that was not cut.
    """
    stats = frame.select([pl.col(n).drop_nulls().drop_nans().n_unique().alias(n) for n in names]).row(0)
    return [n for n, k in zip(names, stats, strict=True) if k <= 1]


# --------------------------------------------------------------------------- start invariance
START_CUTS = (60, 1440)
"""Minutes of each token's past removed by the start-truncation check: an hour, a day."""
START_RTOL = 1e-6


@dataclass
class StartDrift:
    """How one feature depends on where history starts."""

    rows: int = 0
    """Rows (past the warm-up of the shortened history) whose value differs beyond the tolerance."""
    max_rel_diff: float = 0.0
    bars_to_agree: int = 0
    """Bars after the cut until the value agrees for good, the worst token; -1: it never does."""


@dataclass
class StartReport:
    cuts: tuple[int, ...]
    rtol: float
    rows_checked: int = 0
    drift: dict[str, StartDrift] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.drift


def _rel_diff(a: np.ndarray, b: np.ndarray, typical: float) -> np.ndarray:
    """``|a - b|`` relative to the larger of the two and the feature's ``typical`` magnitude, so that a
    value crossing zero (MACD) is compared at its feature's scale, not at rounding level."""
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), max(typical, 1e-300))
    rel: np.ndarray = np.abs(a - b) / scale
    rel[np.isnan(a) & np.isnan(b)] = 0.0
    rel[np.isnan(a) != np.isnan(b)] = np.inf
    return rel


def check_start_invariance(
    bars: pl.DataFrame,
    feature_fn: FeatureFn,
    cuts: tuple[int, ...] = START_CUTS,
    rtol: float = START_RTOL,
    *,
    from_data_start: bool = False,
) -> StartReport:
    """Remove the first ``cut`` minutes of every token's history (with ``from_data_start``, every bar
    before the data's first minute plus ``cut``: a daemon started that much later, the fair cut for
    features that depend on other tokens, such as the market context), recompute, and compare each feature on
    the rows the shortened run has past its warm-up (``feature_fn`` returns ``token, ts, ready`` and the
    features) with the full run, relative to the larger value or the feature's median magnitude. A
    feature that depends on where history starts (a dataset clock, a
    cumulative level, an average still converging from its seed) differs; how many bars after the cut it
    takes to agree for good is the convergence horizon its warm-up must cover.

    Cutting the *future* (:func:`check_lookahead`) cannot see this: it is the past that a freshly
    started daemon lacks."""
    bars = bars.sort("token", "ts")
    full = feature_fn(bars)
    names = [c for c in full.columns if c not in ("token", "ts", "ready")]
    typical = {n: float(full[n].cast(pl.Float64).fill_nan(None).abs().median() or 0.0)  # type: ignore[arg-type]
               for n in names}  # fmt: skip
    first = pl.col("ts").min() if from_data_start else pl.col("ts").min().over("token")
    report = StartReport(tuple(cuts), rtol)
    for cut in cuts:
        part = feature_fn(bars.filter(pl.col("ts") >= first + pl.duration(minutes=cut)))
        part = part.with_columns(pl.int_range(pl.len()).over("token").alias("_bar")).filter(pl.col("ready"))
        both = part.join(full.drop("ready"), on=["token", "ts"], suffix="_full")
        report.rows_checked += both.height
        bar = both["_bar"].to_numpy()
        last_bar = both.group_by("token", maintain_order=True).agg(pl.col("_bar").max())
        ends = dict(last_bar.iter_rows())
        tokens = both["token"].to_numpy()
        for name in names:
            rel = _rel_diff(
                both[name].cast(pl.Float64).to_numpy(),
                both[f"{name}_full"].cast(pl.Float64).to_numpy(),
                typical[name],
            )
            bad = rel > rtol
            if not bad.any():
                continue
            d = report.drift.setdefault(name, StartDrift())
            d.rows += int(bad.sum())
            d.max_rel_diff = max(d.max_rel_diff, float(np.max(rel[np.isfinite(rel)], initial=0.0)))
            if not np.isfinite(rel[bad]).all():
                d.max_rel_diff = float("inf")
            for token in np.unique(tokens[bad]):
                last = int(bar[bad & (tokens == token)].max())
                agree = -1 if last == ends[token] else last + 1
                d.bars_to_agree = -1 if -1 in (agree, d.bars_to_agree) else max(d.bars_to_agree, agree)
    return report
