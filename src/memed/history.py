"""The decision path over a whole history at once (the backtester's replay).

:meth:`DecisionPath.process` decides one minute for the tokens that ticked in it; a long-running daemon
calls it once a minute. Replaying months of history that way is bound by per-call overhead (a few tokens
a minute, microseconds per numpy or ONNX Runtime call). This module computes the *same* decisions in
bulk, stage by stage, each stage exactly what the minute loop does:

* features: the batch driver (:func:`~memed.features.batch.run_kernel`), bit-equal to the stream;
  duplicate and out-of-order bars are dropped as the stream drops them;
* per-token books: dead detection (minutes since the close last changed) and the 30-bar EWMA of traded
  notional, in one compiled pass with the minute loop's arithmetic;
* models: the rows the daemon scores (``ready``) in large ONNX Runtime calls; the LSTM over each run of
  consecutive ready bars (its state restarts where readiness breaks, as the daemon resets it) through the
  whole-sequence graph; the transformer over each run's windows;
* ensemble, policy and risk: :meth:`DecisionPath.decide`, the very function the minute loop calls.

Tests compare the result with the minute loop row by row, and with a daemon fed over Mosquitto.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

from memed.config import ModelName
from memed.features.batch import bar_matrix, epoch_minutes, run_kernel, token_starts
from memed.features.kernel import STATUS_STALE
from memed.features.spec import FeatureSpec
from memed.models.runtime import ModelRunner, run_stateful
from memed.signals.risk import NOTIONAL_ALPHA, RiskPlan

if TYPE_CHECKING:
    from memed.pipeline import DecisionPath

TABULAR_BATCH = 262_144
WINDOW_BATCH = 2_048


@dataclass
class HistoryResult:
    """One row per (non-stale) input bar, sorted by token then time; arrays as in ``MinuteResult``."""

    tokens: pl.Series
    ts_minutes: np.ndarray
    action: np.ndarray
    reason: np.ndarray
    p: np.ndarray
    strength: np.ndarray
    horizon_p: np.ndarray
    risk: RiskPlan
    close: np.ndarray
    atr: np.ndarray
    recent_notional: np.ndarray
    horizons: tuple[int, ...]
    model_set: str
    stale: int


@njit(cache=True)
def _token_books(
    starts: np.ndarray,
    ts: np.ndarray,
    close: np.ndarray,
    traded: np.ndarray,
    dead_minutes: float,
    alpha: float,
    dead: np.ndarray,
    notional: np.ndarray,
) -> None:
    """Per token (rows ``starts[g] .. starts[g+1]``, time order): the minute loop's dead flag and
    notional EWMA, with its arithmetic (first bar: last change = its time, EWMA = its notional)."""
    for g in range(len(starts) - 1):
        a = starts[g]
        last_close = close[a]
        last_change = ts[a]
        prev = np.nan
        for i in range(a, starts[g + 1]):
            if close[i] != last_close:
                last_change = ts[i]
            last_close = close[i]
            dead[i] = ts[i] - last_change >= dead_minutes
            prev = traded[i] if np.isnan(prev) else prev + alpha * (traded[i] - prev)
            notional[i] = prev


def ready_runs(token_starts: np.ndarray, ready: np.ndarray) -> np.ndarray:
    """``[start, end)`` row ranges of each run of consecutive ready bars within a token: the stretches
    over which the daemon carries a token's sequence-model state (it resets it on every unready bar)."""
    n = len(ready)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    first = np.zeros(n, dtype=bool)
    first[token_starts[:-1]] = True
    prev_ready = np.r_[False, ready[:-1]]
    begins = np.flatnonzero(ready & (first | ~prev_ready))
    last = np.zeros(n, dtype=bool)
    last[token_starts[1:] - 1] = True
    next_ready = np.r_[ready[1:], False]
    ends = np.flatnonzero(ready & (last | ~next_ready)) + 1
    return np.column_stack([begins, ends]).astype(np.int64)


def _score_tabular(runner: ModelRunner, x: np.ndarray) -> np.ndarray:
    """Every row, in chunks that are views of ``x`` (no copy; rows are scored independently, so scoring
    the few unready rows too and discarding them afterwards changes nothing else)."""
    if not len(x):
        return np.empty((0, runner.n_horizons))
    if len(x) <= TABULAR_BATCH:
        return runner.predict(x)
    return np.concatenate([runner.predict(x[a : a + TABULAR_BATCH]) for a in range(0, len(x), TABULAR_BATCH)])


def _score_window(runner: ModelRunner, values: np.ndarray, runs: np.ndarray, p: np.ndarray) -> None:
    w = runner.entry.window
    for a, b in runs.tolist():
        if b - a < w:
            continue
        windows = sliding_window_view(values[a:b], w, axis=0).transpose(0, 2, 1)  # [n, w, F]
        for k in range(0, len(windows), WINDOW_BATCH):
            chunk = np.ascontiguousarray(windows[k : k + WINDOW_BATCH])
            p[a + w - 1 + k : a + w - 1 + k + len(chunk)] = runner.predict_window(chunk)


def score_history(
    runners: Mapping[ModelName, ModelRunner],
    values: np.ndarray,
    ready: np.ndarray,
    runs: np.ndarray,
    n_h: int,
) -> dict[str, np.ndarray]:
    """Each served model's ``p_up`` [rows, H] where the daemon would have one (NaN elsewhere)."""
    n = len(values)
    out: dict[str, np.ndarray] = {}
    for name, runner in runners.items():
        kind = runner.entry.kind
        if kind == "tabular":
            p = _score_tabular(runner, values)
            p[~ready] = np.nan
            out[name] = p
            continue
        p = np.full((n, n_h), np.nan)
        if kind == "stateful":
            seqs = [values[a:b] for a, b in runs.tolist()]
            for (a, b), pr in zip(runs.tolist(), run_stateful(runner, seqs), strict=True):
                p[a:b] = pr
        else:
            _score_window(runner, values, runs, p)
        out[name] = p
    return out


@dataclass
class HistoryRows:
    """The bars a replay decides (stale ones dropped), sorted by token then time, with their features."""

    tokens: pl.Series
    starts: np.ndarray  # row offsets where each token begins, plus the row count
    ts: np.ndarray  # epoch minutes
    bars: np.ndarray  # (9, rows) as the kernel takes them
    values: np.ndarray  # (rows, features) in spec order
    ready: np.ndarray  # the daemon would score the row
    stale: int


def history_rows(spec: FeatureSpec, bars: pl.DataFrame) -> HistoryRows:
    """Features of every bar by the batch driver, with duplicate and out-of-order bars dropped as the
    stream drops them."""
    bars = bars.sort("token", "ts", maintain_order=True)
    tokens, ts, x = bars["token"], epoch_minutes(bars["ts"]), bar_matrix(bars)
    starts = token_starts(tokens)
    raw, status, ready = run_kernel(starts, ts, x, spec)
    keep = status != STATUS_STALE
    stale = int(len(keep) - keep.sum())
    if stale:  # copies of this size cost tens of ms here: only when there is something to drop
        raw, ready, x, ts = raw[keep], ready[keep], x[:, keep], ts[keep]
        tokens = tokens.filter(pl.Series(keep))
        starts = token_starts(tokens)
    cols = spec.columns
    values = raw if np.array_equal(cols, np.arange(raw.shape[1])) else np.ascontiguousarray(raw[:, cols])
    return HistoryRows(tokens, starts, ts, x, values, ready, stale)


def process_history(path: DecisionPath, bars: pl.DataFrame) -> HistoryResult:
    t0 = time.perf_counter()
    rows = history_rows(path.spec, bars)
    values, ready, ts = rows.values, rows.ready, rows.ts
    close, volume, liquidity = rows.bars[3], rows.bars[4], rows.bars[5]
    t1 = time.perf_counter()
    dead = np.zeros(len(ts), dtype=bool)
    notional = np.empty(len(ts))
    _token_books(rows.starts, ts, close, close * volume, float(path.cfg.signals.dead_minutes), NOTIONAL_ALPHA,
                 dead, notional)  # fmt: skip
    runs = ready_runs(rows.starts, ready)
    t2 = time.perf_counter()
    n_h = len(path.model_set.manifest.horizons)
    probs = score_history(path.runners, values, ready, runs, n_h)
    t3 = time.perf_counter()
    atr = values[:, path.atr_column] if path.atr_column >= 0 else np.full(len(ts), np.nan)
    horizon_p, decision, risk = path.decide(probs, ready, dead, close, atr, notional, liquidity)
    path.add_timings(t0, t1, t2, t3, time.perf_counter())
    return HistoryResult(
        tokens=rows.tokens,
        ts_minutes=ts,
        action=decision.action,
        reason=decision.reason,
        p=decision.p,
        strength=decision.strength,
        horizon_p=horizon_p,
        risk=risk,
        close=close,
        atr=atr,
        recent_notional=notional,
        horizons=path.model_set.manifest.horizons,
        model_set=path.model_set.id,
        stale=rows.stale,
    )
