"""The history driver: a whole history decided at once, exactly as the minute driver decides it minute by
minute (the backtester's replay).

:meth:`DecisionPath.process <memed.decision.path.DecisionPath.process>` decides one minute for the tokens
that ticked in it; replaying months of history that way is bound by per-call overhead (a few tokens a
minute, microseconds per numpy or ONNX Runtime call). This driver computes the *same* decisions in bulk,
calling the same compiled steps:

* duplicate and out-of-order bars are dropped first, as the stream drops them;
* per-token books (dead detection, the notional EWMA): :func:`~memed.decision.books.books_over_history`,
  the minute driver's :func:`~memed.decision.books.advance_book` step in one compiled pass;
* the history is then cut into blocks of consecutive rows (``BLOCK_ROWS``); per block, in order:

  - features: the feature kernel (:func:`~memed.features.batch.run_block`), each token's state carried
    from the block before, so the features are those of one pass over the history, bit for bit;
  - models: each :class:`~memed.decision.scorers.Scorer`'s ``run`` over the block's ready rows (sequence
    models per run of consecutive ready bars, their state carried into the next block where a run goes on);
  - ensemble, policy and risk: the minute driver's :class:`~memed.decision.decide.Decider`.

With ``overlap`` a second thread computes the next block's features and the previous block's decisions
while the current block is scored (the kernel, the decision kernels and ONNX Runtime all release the
GIL, and the served sessions use one core each), so the replay's wall time approaches its inference
time. The timings then count each stage's own seconds, whichever thread ran it, and ``features_wait``
the seconds the scoring thread waited for features.

Tests compare the result with the minute driver row by row, and with a daemon fed over Mosquitto.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from numba import njit

from memed.data.bars import CLOSE, LIQUIDITY, VOLUME
from memed.data.frames import bar_matrix, by_token, epoch_minutes, token_starts
from memed.decision.books import books_over_history
from memed.decision.decide import Decider
from memed.decision.result import PLAN_COLUMNS, Decisions
from memed.decision.scorers import Scorer
from memed.features.batch import run_block
from memed.features.kernel import N_OUT, initial_state
from memed.features.market import market_over_history, market_params
from memed.features.spec import FeatureSpec
from memed.signals.policy import Decision
from memed.signals.risk import RiskPlan

BLOCK_ROWS = 8_192
"""Rows per block: large enough that per-call overheads vanish, small enough that the first block's
features (the only ones not hidden behind inference) take milliseconds."""


# ---------------------------------------------------------------- rows


@dataclass
class HistoryRows:
    """The bars a replay decides, sorted by token then time, duplicate and out-of-order bars dropped."""

    tokens: pl.Series
    starts: np.ndarray  # row offsets where each token begins, plus the row count
    ts: np.ndarray  # epoch minutes
    bars: np.ndarray  # (9, rows) in BAR_FIELDS order
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
        self._cols = None if np.array_equal(cols, np.arange(spec.width)) else cols
        self.seconds = 0.0
        self._market: np.ndarray | None = None
        if spec.market:  # every token's bars of a minute go into that minute's market: all rows first
            t0 = time.perf_counter()
            self._market = market_over_history(rows.starts, rows.ts, rows.bars[CLOSE], market_params(spec))
            self.seconds += time.perf_counter() - t0

    def __call__(self, blk: Block) -> tuple[np.ndarray, np.ndarray]:
        """``(values, ready)`` of the block's rows: features in spec order, and whether the daemon would
        score the row (its segment is past the warm-up). Call for each block in order."""
        t0 = time.perf_counter()
        m = blk.b - blk.a
        out = np.empty((m, self.spec.width))
        status = np.empty(m, dtype=np.int8)
        nbars = np.empty(m)
        run_block(blk.bounds, self._carry, blk.continues, self.rows.ts[blk.a : blk.b],
                  self.rows.bars[:, blk.a : blk.b], self._p, self._init, out, status, nbars)  # fmt: skip
        if self._market is not None:
            out[:, N_OUT:] = self._market[blk.a : blk.b]
        self.spec.mask_converging(out, nbars)
        values = out if self._cols is None else np.ascontiguousarray(out[:, self._cols])
        ready = nbars >= self.spec.warmup_bars
        self.seconds += time.perf_counter() - t0
        return values, ready


def splits_tokens(scorers: Sequence[Scorer]) -> bool:
    """Whether blocks may cut a token: every scorer carries its state across blocks."""
    return all(s.splits_tokens for s in scorers)


def score_block(scorers: Sequence[Scorer], blk: Block, values: np.ndarray, ready: np.ndarray
                ) -> dict[str, np.ndarray]:  # fmt: skip
    """Each scorer's ``p_up`` [rows, H] for one block, where the daemon would have one (NaN elsewhere)."""
    runs = ready_runs(blk.bounds, ready)
    return {s.name: s.run(values, ready, runs, blk.continues, blk.open_end) for s in scorers}


# ---------------------------------------------------------------- the replay


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
    side: np.ndarray = field(init=False)
    horizon_p: np.ndarray = field(init=False)
    atr: np.ndarray = field(init=False)
    plan: np.ndarray = field(init=False)  # PLAN_COLUMNS
    cap: np.ndarray = field(init=False)
    members: dict[str, np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.dest)
        self.action = np.empty(n, dtype=np.int8)
        self.reason = np.empty(n, dtype=np.int8)
        self.side = np.empty(n, dtype=np.int8)
        self.p, self.strength, self.atr = np.empty(n), np.empty(n), np.empty(n)
        self.horizon_p = np.empty((n, self.n_h))
        self.plan = np.empty((len(PLAN_COLUMNS), n))
        self.cap = np.empty(n, dtype=np.int8)

    def store(self, blk: Block, horizon_p: np.ndarray, d: Decision, risk: RiskPlan, atr: np.ndarray,
              members: dict[str, np.ndarray]) -> None:  # fmt: skip
        at = self.dest[blk.a : blk.b]
        for name, p in members.items():
            if name not in self.members:
                self.members[name] = np.full((len(self.dest), self.n_h), np.nan)
            self.members[name][at] = p
        self.action[at], self.reason[at], self.side[at] = d.action, d.reason, d.side
        self.p[at], self.strength[at] = d.p, d.strength
        self.horizon_p[at], self.atr[at], self.cap[at] = horizon_p, atr, risk.cap
        for j, name in enumerate(PLAN_COLUMNS):
            self.plan[j, at] = getattr(risk, name)

    def risk(self) -> RiskPlan:
        entry, stop_loss, take_profit, units, notional, risk_reward = self.plan
        return RiskPlan(entry, stop_loss, take_profit, units, notional, risk_reward, self.cap)


@dataclass
class HistoryRun:
    """What one history replay needs: the feature spec, fresh scorers (their state is the replay's own),
    the decider, the books' dead threshold and the served set's identity."""

    spec: FeatureSpec
    scorers: Sequence[Scorer]
    decide: Decider
    dead_minutes: float
    atr_column: int
    """The ATR-per-close feature's column (-1: none); ATR in price units is it times the close."""
    horizons: tuple[int, ...]
    model_set: str
    timings: dict[str, float] = field(default_factory=dict)


def decide_history(run: HistoryRun, bars: pl.DataFrame, block_rows: int = BLOCK_ROWS, overlap: bool = True
                   ) -> Decisions:  # fmt: skip
    """Every bar of ``bars`` decided (see the module's description); ``run.timings`` gets each stage's
    seconds."""
    rows = history_rows(bars)
    t_start = time.perf_counter()
    ts = rows.ts
    n = len(ts)
    close, volume, liquidity = rows.bars[CLOSE], rows.bars[VOLUME], rows.bars[LIQUIDITY]
    dead, notional = books_over_history(rows.starts, ts, close, volume, run.dead_minutes)
    blocks = plan_blocks(rows.starts, block_rows, splits_tokens(run.scorers))
    features = BlockFeatures(run.spec, rows)
    # results are written straight into time-major order (time, then token: the stable sort of the
    # token-major rows by time), so the signals need no sort afterwards
    order = np.argsort(ts, kind="stable")
    dest = np.empty(n, dtype=np.int64)
    dest[order] = np.arange(n)
    res = _Outputs(len(run.horizons), dest)

    def reorder() -> tuple[pl.Series, np.ndarray, np.ndarray, np.ndarray]:
        return rows.tokens.gather(order), ts[order], close[order], notional[order]

    clock = {"decision": time.perf_counter() - t_start, "features_wait": 0.0}

    def decide(blk: Block, probs: dict[str, np.ndarray], values: np.ndarray, ready: np.ndarray) -> None:
        t0 = time.perf_counter()
        a, b = blk.a, blk.b
        atr = values[:, run.atr_column] * close[a:b] if run.atr_column >= 0 else np.full(b - a, np.nan)
        horizon_p, d, risk, members = run.decide(probs, ready, dead[a:b], close[a:b], atr, notional[a:b],
                                                 liquidity[a:b])  # fmt: skip
        res.store(blk, horizon_p, d, risk, atr, members)
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
            probs = score_block(run.scorers, blk, values, ready)
            clock["features_wait"] += t1 - t0
            if overlap:
                decided.append(pool.submit(decide, blk, probs, values, ready))
            else:
                decide(blk, probs, values, ready)
        for f in decided:
            f.result()
        tokens, ts, close, notional = reordered.result() if reordered is not None else reorder()
    clock["inference"] = sum(s.seconds for s in run.scorers)
    clock["features"] = features.seconds
    for key, seconds in clock.items():
        run.timings[key] = run.timings.get(key, 0.0) + seconds
    return Decisions(
        tokens=tokens,
        ts_minutes=ts,
        action=res.action,
        reason=res.reason,
        p=res.p,
        strength=res.strength,
        side=res.side,
        horizon_p=res.horizon_p,
        risk=res.risk(),
        close=close,
        atr=res.atr,
        recent_notional=notional,
        horizons=run.horizons,
        model_set=run.model_set,
        feature_spec=run.spec.hash,
        hold_minutes=run.decide.hold_minutes,
        stale=rows.stale,
        members=res.members,
    )
