"""The walk-forward plan over global time (all tokens share one calendar).

Fold ``k`` tests ``[test_start, test_start + test)``, with ``test_start = start + train + embargo + k x
step``; its training window ends ``embargo`` minutes before the test starts and begins at ``start``
(expanding) or ``train`` minutes before its end (sliding). Models are retrained every ``retrain_every``
folds; the folds in between reuse the last trained set. The embargo must be at least the longest label
horizon, so no training label (which looks ``h`` minutes ahead) reaches into the test period.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np

from memed.errors import ConfigError


@dataclass(frozen=True)
class Fold:
    index: int
    train_start: datetime
    train_end: datetime  # exclusive
    test_start: datetime
    test_end: datetime  # exclusive
    retrain: bool


def plan_folds(
    start: datetime,
    end: datetime,
    *,
    train_minutes: int,
    test_minutes: int,
    step_minutes: int,
    embargo_minutes: int,
    expanding: bool = True,
    retrain_every: int = 1,
    max_folds: int = 0,
) -> list[Fold]:
    """Folds that fit in ``[start, end]``."""
    folds: list[Fold] = []
    train, test, step, gap = (
        timedelta(minutes=m) for m in (train_minutes, test_minutes, step_minutes, embargo_minutes)
    )
    k = 0
    while True:
        test_start = start + train + gap + k * step
        test_end = test_start + test
        if test_end > end + timedelta(minutes=1) or (max_folds and k >= max_folds):
            break
        train_end = test_start - gap
        train_start = start if expanding else train_end - train
        folds.append(Fold(k, train_start, train_end, test_start, test_end, k % retrain_every == 0))
        k += 1
    return folds


def over_coverage(folds: list[Fold], bar_minutes: np.ndarray, retrain_every: int = 1, max_folds: int = 0
                  ) -> list[Fold]:  # fmt: skip
    """The folds whose test window holds a bar (``bar_minutes``: the data's bar times in epoch minutes,
    sorted): a stretch with no data at all (files years apart, an outage) is not planned as empty folds.
    The folds kept are numbered densely, retrain every ``retrain_every`` of them, and at most
    ``max_folds`` (0: all) are kept."""
    kept: list[Fold] = []
    for f in folds:
        lo, hi = (int(np.searchsorted(bar_minutes, t.timestamp() / 60)) for t in (f.test_start, f.test_end))
        if lo == hi:
            continue
        if max_folds and len(kept) >= max_folds:
            break
        i = len(kept)
        kept.append(replace(f, index=i, retrain=i % retrain_every == 0))
    return kept


def check_embargo(folds: list[Fold], longest_horizon_minutes: int) -> None:
    """Refuse a plan in which a training label could see its fold's test period."""
    need = timedelta(minutes=longest_horizon_minutes)
    for f in folds:
        gap = (f.test_start - f.train_end).total_seconds() / 60
        if gap < need.total_seconds() / 60:
            raise ConfigError(
                f"fold {f.index}: only {gap:.0f} minutes between training and test, the longest horizon "
                f"is {longest_horizon_minutes}: labels would leak"
            )


def in_sample_overlaps(folds: list[Fold], fit_start: datetime, fit_end: datetime, horizon_minutes: int
                       ) -> list[str]:  # fmt: skip
    """The folds whose test window a model set fit on bars ``fit_start .. fit_end`` has seen: where the
    window begins before the last training label ends (``fit_end`` + the longest horizon) and ends after
    ``fit_start``. Tokens share a calendar, so any token in those weeks counts."""
    seen_until = fit_end + timedelta(minutes=horizon_minutes)
    return [
        f"fold {f.index} tests {f.test_start:%Y-%m-%d %H:%M} .. {f.test_end:%Y-%m-%d %H:%M}"
        for f in folds
        if f.test_start <= seen_until and f.test_end > fit_start
    ]
