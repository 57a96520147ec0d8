"""The decision path over a whole history at once (the backtester's replay).

:meth:`DecisionPath.process` decides one minute for the tokens that ticked in it; a long-running daemon
calls it once a minute. Replaying months of history that way is bound by per-call overhead (a few tokens
a minute, microseconds per numpy or ONNX Runtime call). This module computes the *same* decisions in
bulk, each stage exactly what the minute loop does:

* duplicate and out-of-order bars are dropped first, as the stream drops them;
* per-token books: dead detection (minutes since the close last changed) and the 30-bar EWMA of traded
  notional, in one compiled pass with the minute loop's arithmetic;
* the history is then cut into blocks of consecutive rows (``BLOCK_ROWS``); per block, in order:

  - features: the feature kernel (:func:`~memed.features.batch.run_block`), each token's state carried
    from the block before, so the features are those of one pass over the history, bit for bit;
  - models: the rows the daemon scores (``ready``) in one ONNX Runtime call per model; the LSTM over each
    run of consecutive ready bars (its state restarts where readiness breaks, as the daemon resets it,
    and carries into the next block where a run goes on) through the whole-sequence graph; the
    transformer over each run's windows;
  - ensemble, policy and risk: :meth:`DecisionPath.decide`, the very function the minute loop calls.

With ``overlap`` a second thread computes the next block's features and the previous block's decisions
while the current block is scored (the kernel, the decision kernels and ONNX Runtime all release the
GIL, and the served sessions use one core each), so the replay's wall time approaches its inference
time. ``DecisionPath.timings`` then counts each stage's own seconds, whichever thread ran it, and
``features_wait`` the seconds the scoring thread waited for features.

Tests compare the result with the minute loop row by row, and with a daemon fed over Mosquitto.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

from memed.config import ModelName
from memed.features.batch import bar_matrix, by_token, epoch_minutes, run_block, token_starts
from memed.features.kernel import N_OUT, initial_state
from memed.features.spec import FeatureSpec
from memed.models.runtime import ModelRunner, run_sequence, step_stateful
from memed.signals.policy import Decision
from memed.signals.risk import NOTIONAL_ALPHA, RiskPlan

if TYPE_CHECKING:
    from memed.pipeline import DecisionPath

BLOCK_ROWS = 8_192
"""Rows per block: large enough that per-call overheads vanish, small enough that the first block's
features (the only ones not hidden behind inference) take milliseconds."""
WINDOW_BATCH = 2_048


@dataclass
class HistoryResult:
    """One row per (non-stale) input bar, sorted by time then token; arrays as in ``MinuteResult``."""

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


# ---------------------------------------------------------------- rows


@dataclass
class HistoryRows:
    """The bars a replay decides, sorted by token then time, duplicate and out-of-order bars dropped."""

    tokens: pl.Series
    starts: np.ndarray  # row offsets where each token begins, plus the row count
    ts: np.ndarray  # epoch minutes
    bars: np.ndarray  # (9, rows) as the kernel takes them
    stale: int  # bars dropped


@njit(cache=True)
def _fresh(starts: np.ndarray, ts: np.ndarray, keep: np.ndarray) -> None:
    """A bar is kept when it is later than every kept bar of its token before it: what the stream's
    gap rule accepts (a duplicate or out-of-order bar is ignored, the state unchanged)."""
    for g in range(len(starts) - 1):
        last = -np.inf
        for i in range(starts[g], starts[g + 1]):
            keep[i] = ts[i] > last
            if keep[i]:
                last = ts[i]


def history_rows(bars: pl.DataFrame) -> HistoryRows:
    """The bars of a canonical frame as a replay decides them (sorted by token then time, stably; a
    frame already in that order, as loaded datasets are, is not sorted again)."""
    bars, starts = by_token(bars)
    tokens, ts = bars["token"], epoch_minutes(bars["ts"])
    keep = np.empty(len(ts), dtype=bool)
    _fresh(starts, ts, keep)
    stale = int(len(keep) - keep.sum())
    if stale:
        bars, ts = bars.filter(pl.Series(keep)), ts[keep]
        tokens = bars["token"]
        starts = token_starts(tokens)
    return HistoryRows(tokens, starts, ts, bar_matrix(bars), stale)


# ---------------------------------------------------------------- blocks


@dataclass
class Block:
    """Rows ``a .. b`` of a history. ``bounds``: token boundaries within the block (0 .. b - a);
    ``continues``: its first token began in an earlier block; ``open_end``: its last token goes on in
    the next block."""

    a: int
    b: int
    bounds: np.ndarray
    continues: bool
    open_end: bool


def plan_blocks(starts: np.ndarray, block_rows: int, split_tokens: bool) -> list[Block]:
    """Cut rows ``0 .. starts[-1]`` into blocks of about ``block_rows``: when tokens may be split, a
    first block of a quarter of that (its features are the only ones nothing overlaps) and then every
    ``block_rows`` rows; else at the first token boundary after ``block_rows`` rows."""
    n = int(starts[-1])
    if n == 0:
        return []
    if split_tokens:
        first = max(1, block_rows // 4)
        cuts = [0, *range(first, n, block_rows), n] if n > first else [0, n]
    else:
        cuts = [0]
        for s in starts[1:-1].tolist():
            if s - cuts[-1] >= block_rows:
                cuts.append(s)
        cuts.append(n)
    token_start = np.zeros(n + 1, dtype=bool)
    token_start[starts] = True
    blocks = []
    for a, b in itertools.pairwise(cuts):
        inner = starts[(starts > a) & (starts < b)] - a
        bounds = np.concatenate([[0], inner, [b - a]]).astype(np.int64)
        blocks.append(Block(a, b, bounds, not token_start[a], not token_start[b]))
    return blocks


@njit(cache=True)
def _runs(token_starts: np.ndarray, ready: np.ndarray, out: np.ndarray) -> int:
    k = 0
    for g in range(len(token_starts) - 1):
        i, end = token_starts[g], token_starts[g + 1]
        while i < end:
            if not ready[i]:
                i += 1
                continue
            j = i
            while j < end and ready[j]:
                j += 1
            out[k, 0], out[k, 1] = i, j
            k += 1
            i = j
    return k


def ready_runs(token_starts: np.ndarray, ready: np.ndarray) -> np.ndarray:
    """``[start, end)`` row ranges of each run of consecutive ready bars within a token: the stretches
    over which the daemon carries a token's sequence-model state (it resets it on every unready bar)."""
    out = np.empty((len(ready) // 2 + len(token_starts), 2), dtype=np.int64)
    k = _runs(np.asarray(token_starts, dtype=np.int64), np.asarray(ready, dtype=np.bool_), out)
    return out[:k]


class BlockFeatures:
    """Features of a history's blocks, computed in block order (each token's kernel state carried from
    one block to the next)."""

    def __init__(self, spec: FeatureSpec, rows: HistoryRows) -> None:
        self.spec = spec
        self.rows = rows
        self._p = spec.param_vector()
        self._init = initial_state()
        self._carry = initial_state()
        cols = spec.columns
        self._cols = None if np.array_equal(cols, np.arange(N_OUT)) else cols
        self.seconds = 0.0

    def __call__(self, blk: Block) -> tuple[np.ndarray, np.ndarray]:
        """``(values, ready)`` of the block's rows: features in spec order, and whether the daemon would
        score the row (its segment is past the warm-up). Call for each block in order."""
        t0 = time.perf_counter()
        m = blk.b - blk.a
        out = np.empty((m, N_OUT))
        status = np.empty(m, dtype=np.int8)
        nbars = np.empty(m)
        run_block(blk.bounds, self._carry, blk.continues, self.rows.ts[blk.a : blk.b],
                  self.rows.bars[:, blk.a : blk.b], self._p, self._init, out, status, nbars)  # fmt: skip
        values = out if self._cols is None else np.ascontiguousarray(out[:, self._cols])
        ready = nbars >= self.spec.warmup_bars
        self.seconds += time.perf_counter() - t0
        return values, ready


# ---------------------------------------------------------------- scoring


@dataclass
class Scorer:
    """Scores blocks in order with the served models, carrying sequence state between blocks."""

    runners: Mapping[ModelName, ModelRunner]
    n_h: int
    carries: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Each stateful model's state at the end of the last block, where a ready run goes on into the next."""
    seconds: float = 0.0
    """Time inside the models' calls (ONNX Runtime and its thin wrappers), not the bookkeeping around."""

    @property
    def splits_tokens(self) -> bool:
        """Whether blocks may cut a token: every sequence model must be able to carry its state (the
        whole-sequence LSTM graph can, window models and stepping fallbacks see whole tokens)."""
        for runner in self.runners.values():
            kind = runner.entry.kind
            if kind == "window" or (kind == "stateful" and runner.sequence_session() is None):
                return False
        return True

    def score(self, blk: Block, values: np.ndarray, ready: np.ndarray) -> dict[str, np.ndarray]:
        """Each served model's ``p_up`` [rows, H] where the daemon would have one (NaN elsewhere)."""
        runs = ready_runs(blk.bounds, ready)
        out: dict[str, np.ndarray] = {}
        for name, runner in self.runners.items():
            kind = runner.entry.kind
            if kind == "tabular":
                t0 = time.perf_counter()
                p = runner.predict(values) if len(values) else np.empty((0, self.n_h))
                self.seconds += time.perf_counter() - t0
                p[~ready] = np.nan
            else:
                p = np.full((len(values), self.n_h), np.nan)
                t0 = time.perf_counter()
                if kind == "stateful":
                    self._score_stateful(name, runner, blk, values, runs, p)
                else:
                    _score_window(runner, values, runs, p)
                self.seconds += time.perf_counter() - t0
            out[name] = p
        return out

    def _score_stateful(
        self, name: str, runner: ModelRunner, blk: Block, values: np.ndarray, runs: np.ndarray, p: np.ndarray
    ) -> None:
        seq = runner.sequence_session()
        spans = runs.tolist()
        if seq is None:  # whole tokens per block (see splits_tokens): step them side by side
            for (a, b), pr in zip(spans, step_stateful(runner, [values[a:b] for a, b in spans]), strict=True):
                p[a:b] = pr
            return
        carried = self.carries.pop(name, None)
        end_state = None
        for a, b in spans:
            start = carried if (a == 0 and blk.continues) else None
            p[a:b], end_state = run_sequence(seq, runner, values[a:b], start)
        if end_state is not None and blk.open_end and runs[-1, 1] == len(values):
            self.carries[name] = end_state


def _score_window(runner: ModelRunner, values: np.ndarray, runs: np.ndarray, p: np.ndarray) -> None:
    w = runner.entry.window
    for a, b in runs.tolist():
        if b - a < w:
            continue
        windows = sliding_window_view(values[a:b], w, axis=0).transpose(0, 2, 1)  # [n, w, F]
        for k in range(0, len(windows), WINDOW_BATCH):
            chunk = np.ascontiguousarray(windows[k : k + WINDOW_BATCH])
            p[a + w - 1 + k : a + w - 1 + k + len(chunk)] = runner.predict_window(chunk)


# ---------------------------------------------------------------- the replay


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


@dataclass
class _Outputs:
    """The replay's per-row results, filled block by block: row ``i`` of the history (token-major) goes
    to row ``dest[i]`` (time-major)."""

    n_h: int
    dest: np.ndarray
    action: np.ndarray = field(init=False)
    reason: np.ndarray = field(init=False)
    p: np.ndarray = field(init=False)
    strength: np.ndarray = field(init=False)
    horizon_p: np.ndarray = field(init=False)
    atr: np.ndarray = field(init=False)
    plan: np.ndarray = field(init=False)  # entry, stop, take-profit, units, notional, risk/reward
    cap: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.dest)
        self.action = np.empty(n, dtype=np.int8)
        self.reason = np.empty(n, dtype=np.int8)
        self.p, self.strength, self.atr = np.empty(n), np.empty(n), np.empty(n)
        self.horizon_p = np.empty((n, self.n_h))
        self.plan = np.empty((6, n))
        self.cap = np.empty(n, dtype=np.int8)

    def store(self, blk: Block, horizon_p: np.ndarray, d: Decision, risk: RiskPlan, atr: np.ndarray) -> None:
        at = self.dest[blk.a : blk.b]
        self.action[at], self.reason[at] = d.action, d.reason
        self.p[at], self.strength[at] = d.p, d.strength
        self.horizon_p[at], self.atr[at], self.cap[at] = horizon_p, atr, risk.cap
        for j, arr in enumerate(
            (risk.entry, risk.stop_loss, risk.take_profit, risk.units, risk.notional, risk.risk_reward)
        ):
            self.plan[j, at] = arr

    def risk(self) -> RiskPlan:
        entry, stop_loss, take_profit, units, notional, risk_reward = self.plan
        return RiskPlan(entry, stop_loss, take_profit, units, notional, risk_reward, self.cap)


def process_history(
    path: DecisionPath, bars: pl.DataFrame, *, block_rows: int = BLOCK_ROWS, overlap: bool = True
) -> HistoryResult:
    rows = history_rows(bars)
    t_start = time.perf_counter()
    ts = rows.ts
    n = len(ts)
    close, volume, liquidity = rows.bars[3], rows.bars[4], rows.bars[5]
    dead = np.empty(n, dtype=bool)
    notional = np.empty(n)
    _token_books(rows.starts, ts, close, close * volume, float(path.cfg.signals.dead_minutes), NOTIONAL_ALPHA,
                 dead, notional)  # fmt: skip
    n_h = len(path.model_set.manifest.horizons)
    scorer = Scorer(path.runners, n_h)
    blocks = plan_blocks(rows.starts, block_rows, scorer.splits_tokens)
    features = BlockFeatures(path.spec, rows)
    # results are written straight into time-major order (time, then token: the stable sort of the
    # token-major rows by time), so the signals need no sort afterwards
    order = np.argsort(ts, kind="stable")
    dest = np.empty(n, dtype=np.int64)
    dest[order] = np.arange(n)
    res = _Outputs(n_h, dest)

    def reorder() -> tuple[pl.Series, np.ndarray, np.ndarray, np.ndarray]:
        return rows.tokens.gather(order), ts[order], close[order], notional[order]

    clock = {"decision": time.perf_counter() - t_start, "inference": 0.0, "features_wait": 0.0}

    def decide(blk: Block, probs: dict[str, np.ndarray], values: np.ndarray, ready: np.ndarray) -> None:
        t0 = time.perf_counter()
        a, b = blk.a, blk.b
        atr = values[:, path.atr_column] if path.atr_column >= 0 else np.full(b - a, np.nan)
        horizon_p, d, risk = path.decide(probs, ready, dead[a:b], close[a:b], atr, notional[a:b],
                                         liquidity[a:b])  # fmt: skip
        res.store(blk, horizon_p, d, risk, atr)
        clock["decision"] += time.perf_counter() - t0

    # One helper thread, first in first out: block k+1's features, then block k's decisions, then block
    # k+2's features... while this thread scores; without overlap everything runs here, in order.
    with ThreadPoolExecutor(1, thread_name_prefix="memed-replay") as pool:
        reordered = pool.submit(reorder) if overlap else None
        pending: Future[tuple[np.ndarray, np.ndarray]] | None = None
        decided: list[Future[None]] = []
        for k, blk in enumerate(blocks):
            t0 = time.perf_counter()
            values, ready = pending.result() if pending is not None else features(blk)
            t1 = time.perf_counter()
            pending = pool.submit(features, blocks[k + 1]) if overlap and k + 1 < len(blocks) else None
            probs = scorer.score(blk, values, ready)
            clock["features_wait"] += t1 - t0
            if overlap:
                decided.append(pool.submit(decide, blk, probs, values, ready))
            else:
                decide(blk, probs, values, ready)
        for f in decided:
            f.result()
        tokens, ts, close, notional = reordered.result() if reordered is not None else reorder()
    clock["inference"] = scorer.seconds
    path.timings["features"] += features.seconds
    for key, seconds in clock.items():
        path.timings[key] = path.timings.get(key, 0.0) + seconds
    return HistoryResult(
        tokens=tokens,
        ts_minutes=ts,
        action=res.action,
        reason=res.reason,
        p=res.p,
        strength=res.strength,
        horizon_p=res.horizon_p,
        risk=res.risk(),
        close=close,
        atr=res.atr,
        recent_notional=notional,
        horizons=path.model_set.manifest.horizons,
        model_set=path.model_set.id,
        stale=rows.stale,
    )
