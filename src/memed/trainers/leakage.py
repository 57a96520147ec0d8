"""Leakage guards: the truncation (look-ahead) check and the constant-feature check.

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
