"""Micro-batching by event-time minute, with a written backpressure policy.

* Ticks are conflated latest-per-token within a minute (each replacement counted as ``replaced``; an
  identical resend as ``duplicate``).
* A token's tick older than its newest seen minute is ``out_of_order``; a tick for a minute already
  processed is ``late``. All are counted and ignored, never re-emitted.
* Except a *straggler*: a tick for the newest closed minute from a token that minute did not have (one
  returning from a hole, which nobody expected, published after the expected tokens had closed the
  minute; or one that missed the wait), while it has no newer tick. The backtest has that bar in its
  minute, so dropping it would make the token's live features differ from the backtest's from then
  on. Stragglers form a batch of their own for that minute (:attr:`Batch.stragglers`), due at once and
  before any later minute, and join the next minute's expected tokens. A tick for an older minute, or
  a token's second tick for a minute it was served in, is ``late``.
* Minute ``m`` closes, oldest first, when every expected token (those of the previous closed minute) has
  ticked, when a quorum of tokens (more than ``quorum`` of the expected ones, or of the minute's own
  where more: a strict majority by default) has moved on to a later minute (feeds publish in time
  order), or ``wait_seconds`` after its first tick arrived and after the minute ended on the wall
  clock. One token cannot close a minute for the others: a tick stamped ahead (a clock that runs
  fast, or an attacker) is held in its own minute, which closes in its turn, and changes no other
  token's bars.
  With one message per tick, a *new* token's tick can arrive after the expected ones have closed the
  minute (it is then a straggler); ``close_on_expected=False`` waits for the quorum or the timeout.
* A tick more than ``max_ahead`` minutes past the watermark (the newest closed minute) is deferred, not
  batched: replaying history, the wall clock cannot bound event time, and a tick stamped a day ahead
  would otherwise close its minute on the wait and make every later real tick ``late``. Deferred ticks
  join the batches when the watermark comes within reach of them, or when the whole feed has jumped
  ahead (after a gap in the data or downtime): a quorum of the expected tokens has deferred ticks, or
  ticks keep arriving ahead while none has landed near the watermark for ``wait_seconds``. Beyond
  ``max_deferred`` ticks they are rejected as ``future_ts``. Live, ``max_ahead`` lies past what the
  wall clock admits, so nothing is deferred.

The wall clock is used only to time the wait; what leaves the batcher is event time. A minute's bars are
held as columns of one matrix (a batch leaves as its tokens and a (9, n) bar matrix), and a column batch
is taken whole (:meth:`MinuteBatcher.add_columns`) when that is exactly what its ticks one by one would
do — a feed's normal message: no object per tick on the way in or out.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter

import numpy as np

from memed.config import DaemonConfig
from memed.daemon.checkpoint import BatcherState, PendingMinute
from memed.daemon.ticks import Tick
from memed.data.bars import BAR_FIELDS


@dataclass
class Batch:
    minute: int
    tokens: list[str]
    bars: np.ndarray  # (9, n) float64 in BAR_FIELDS order, row i is tokens[i]'s bar
    last_arrival: float  # wall clock of the batch's last accepted tick (latency metric)
    stragglers: bool = False
    """Tokens of an already closed minute that it did not have, arrived after it closed (module
    docstring): the minute's second (or later) batch."""

    @property
    def ticks(self) -> list[Tick]:
        """The batch as ticks (for tests and the rare paths; the minute loop takes the arrays)."""
        return _ticks(self.tokens, self.minute, self.bars)


def _ticks(tokens: list[str], minute: int, bars: np.ndarray) -> list[Tick]:
    return [Tick(t, minute, *row) for t, row in zip(tokens, bars.T.tolist(), strict=True)]


_BAR_ROW = attrgetter(*BAR_FIELDS)


class _Minute:
    """One unclosed minute, latest bar per token, in first-arrival order (a replaced bar keeps its token's
    place): the ticks added one by one (as cheap as the dict they are), and column batches as whole
    blocks (their arrays are the minute's from then on). The (9, n) matrix is built once, when the
    minute closes."""

    __slots__ = ("blocks", "index", "n", "ticks")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}  # token -> position (a withdrawn token leaves a hole)
        self.n = 0
        self.ticks: dict[str, Tick] = {}  # the tokens added one by one
        self.blocks: list[tuple[int, np.ndarray]] = []  # (first position, (9, k) bars)

    def __len__(self) -> int:
        return len(self.index)

    def _block_bar(self, token: str) -> np.ndarray:
        p = self.index[token]
        first, block = next((f, b) for f, b in reversed(self.blocks) if f <= p)
        bar: np.ndarray = block[:, p - first]
        return bar

    def same(self, tick: Tick) -> bool:
        """Whether the token's bar equals the tick's field by field, an absent field (NaN) equal to an
        absent one: a resend, however it came (a tick or a column batch)."""
        prev = self.ticks.get(tick.token)
        bar = prev.row() if prev is not None else self._block_bar(tick.token)
        return bool(np.array_equal(bar, tick.row(), equal_nan=True))

    def put(self, tick: Tick) -> None:
        """Set the token's bar (a new token takes the next position; a known one keeps its own)."""
        token = tick.token
        if token not in self.index:
            self.index[token] = self.n
            self.n += 1
            self.ticks[token] = tick
        elif token in self.ticks:
            self.ticks[token] = tick
        else:  # a bar that came in a column batch, replaced
            self._block_bar(token)[:] = tick.row()

    def drop(self, token: str) -> None:
        del self.index[token]
        self.ticks.pop(token, None)

    def extend(self, tokens: list[str], bars: np.ndarray) -> None:
        """Tokens new to this minute, with their (9, k) bars."""
        k = len(tokens)
        self.blocks.append((self.n, bars))
        self.index.update(zip(tokens, range(self.n, self.n + k), strict=True))
        self.n += k

    def arrays(self) -> tuple[list[str], np.ndarray]:
        tokens = list(self.index)
        if not self.ticks and len(self.blocks) == 1 and len(tokens) == self.n:
            return tokens, self.blocks[0][1]  # one column batch: its own array
        out = np.empty((len(BAR_FIELDS), self.n))
        for first, block in self.blocks:
            out[:, first : first + block.shape[1]] = block
        if k := len(self.ticks):
            at = np.fromiter(map(self.index.__getitem__, self.ticks), np.intp, k)
            width = len(BAR_FIELDS)
            flat = np.fromiter(chain.from_iterable(map(_BAR_ROW, self.ticks.values())), np.float64, k * width)
            out[:, at] = flat.reshape(k, width).T
        if len(tokens) == self.n:  # no token withdrawn: the positions in order
            return tokens, out
        return tokens, out[:, np.fromiter(self.index.values(), np.intp, len(tokens))]

    def as_ticks(self, minute: int) -> list[Tick]:
        tokens, bars = self.arrays()
        return _ticks(tokens, minute, bars)


@dataclass
class MinuteBatcher:
    wait_seconds: float
    close_on_expected: bool = True
    quorum: float = 0.5
    max_ahead: int | None = None
    """Minutes past the watermark a tick may be before it is deferred; None: never deferred."""
    max_deferred: int = 100_000
    counts: Counter[str] = field(default_factory=Counter)
    last_closed: int = -1
    _pending: dict[int, _Minute] = field(default_factory=dict)
    _first: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _newest: dict[str, int] = field(default_factory=dict)
    _expected: frozenset[str] = frozenset()
    _moved: dict[int, int] = field(default_factory=dict)
    """Per unclosed minute: how many tokens have a tick at a later minute."""
    ignored_later: Counter[str] = field(default_factory=Counter)
    """Deferred ticks ignored when they joined the batches (the caller takes and counts them)."""
    _deferred: list[Tick] = field(default_factory=list)
    _floor: int = -1
    """Raised when the feed jumps ahead: the watermark is at least this."""
    _promoted_at: int | None = None
    """The watermark at the last promotion of deferred ticks."""
    _near_at: float = -math.inf
    """Wall clock of the newest tick batched near the watermark."""
    _deferred_at: float = -math.inf
    """Wall clock of the newest tick deferred."""
    _stragglers: _Minute | None = None
    """Stragglers of the newest closed minute, not yet due."""
    _straggler_times: tuple[float, float] = (0.0, 0.0)
    """Wall clock of the stragglers' first and last tick."""

    @classmethod
    def for_daemon(cls, d: DaemonConfig) -> MinuteBatcher:
        """As ``memed run`` batches: live, the wall clock admits ticks up to ``max_future_seconds`` ahead,
        while the newest closed minute trails it by up to two; nothing the clock admits is deferred
        (replayed history can be)."""
        return cls(d.batch_wait_seconds, close_on_expected=d.close_on_expected, quorum=d.close_quorum,
                   max_ahead=-(-d.max_future_seconds // 60) + 2)  # fmt: skip

    @property
    def idle(self) -> bool:
        """No tick of an unclosed minute (nor a straggler) is held."""
        return not self._pending and self._stragglers is None

    @property
    def watermark(self) -> int | None:
        """The newest closed minute (event time), once one has closed."""
        w = max(self.last_closed, self._floor)
        return w if w >= 0 else None

    def add(self, tick: Tick, now: float) -> str | None:
        """Accept a tick; returns the reason when it is ignored."""
        m = tick.minute
        w = self.watermark
        if self._deferred and w != self._promoted_at:  # earlier ticks first: a token's order is kept
            self._promote_within(now)
        if self.max_ahead is not None and w is not None and m > w + self.max_ahead:
            if len(self._deferred) >= self.max_deferred:
                return self._count("future_ts")
            self._deferred.append(tick)
            self._deferred_at = now
            return None
        self._near_at = now
        return self._batch(tick, now)

    def _batch(self, tick: Tick, now: float) -> str | None:
        m = tick.minute
        if m <= self.last_closed:
            return self._straggle(tick, now) if m == self.last_closed else self._count("late")
        newest = self._newest.get(tick.token, -1)
        if m < newest:
            return self._count("out_of_order")
        bucket = self._pending.get(m)
        if bucket is None:
            bucket = self._pending[m] = _Minute()
            self._moved[m] = self._later(m)
        if tick.token in bucket.index:
            if bucket.same(tick):
                return self._count("duplicate")
            self.counts["replaced"] += 1
        bucket.put(tick)
        if m > newest:  # this token moves on past the unclosed minutes in [newest, m)
            for p in self._moved:
                if newest <= p < m:
                    self._moved[p] += 1
        self._newest[tick.token] = m
        self._first.setdefault(m, now)
        self._last[m] = now
        return None

    def _straggle(self, tick: Tick, now: float) -> str | None:
        """A tick for the newest closed minute: a straggler's (module docstring), or ``late``."""
        bucket = self._stragglers
        if bucket is not None and tick.token in bucket.index:
            if bucket.same(tick):
                return self._count("duplicate")
            self.counts["replaced"] += 1
        elif tick.token in self._expected:  # the minute had it
            return self._count("late")
        elif self._newest.get(tick.token, -1) > tick.minute:
            return self._count("out_of_order")
        if bucket is None:
            bucket = self._stragglers = _Minute()
            self._straggler_times = (now, now)
        bucket.put(tick)
        self._newest[tick.token] = tick.minute
        self._straggler_times = (self._straggler_times[0], now)
        return None

    def add_columns(self, tokens: list[str], minutes: np.ndarray, bars: np.ndarray, now: float) -> bool:
        """A column batch's ticks at once — when that is exactly what adding them one by one would do: all
        of one open minute within reach, nothing deferred, each token once, none already in that minute
        and none ahead of it. Otherwise nothing is added and False returned (the caller adds them one by
        one). ``bars``: (9, n) in BAR_FIELDS order."""
        n = len(tokens)
        if not n or self._deferred:
            return False
        m = int(minutes[0])
        w = self.watermark
        if m <= self.last_closed or (self.max_ahead is not None and w is not None and m > w + self.max_ahead):
            return False
        if not (minutes == m).all():
            return False
        bucket = self._pending.get(m)
        if bucket is not None and not bucket.index.keys().isdisjoint(tokens):
            return False
        get = self._newest.get
        newest = np.fromiter(map(get, tokens, repeat(-1)), np.int64, n)
        if (newest > m).any() or len(set(tokens)) != n:
            return False
        if bucket is None:
            bucket = self._pending[m] = _Minute()
            self._moved[m] = self._later(m)
        bucket.extend(tokens, bars)
        for p in self._moved:  # each token moves on past the unclosed minutes in [its newest, m)
            if p < m:
                self._moved[p] += int(np.count_nonzero(newest <= p))
        self._newest.update(zip(tokens, repeat(m)))
        self._near_at = now
        self._first.setdefault(m, now)
        self._last[m] = now
        return True

    def _count(self, reason: str) -> str:
        self.counts[reason] += 1
        return reason

    def due(self, now: float, *, flush: bool = False) -> list[Batch]:
        """Batches ready to process, oldest first (``flush``: everything pending)."""
        if self._deferred:
            self._promote(now)
        out = []
        if self._stragglers is not None:  # the newest closed minute's, before any later minute
            tokens, bars = self._stragglers.arrays()
            out.append(Batch(self.last_closed, tokens, bars, self._straggler_times[1], stragglers=True))
            self._expected |= frozenset(tokens)
            self._stragglers = None
        for m in sorted(self._pending):
            w = self.watermark
            if self.max_ahead is not None and w is not None and m > w + self.max_ahead:
                self._demote(m)  # batched before any minute had closed, and far ahead of the first
                break
            bucket = self._pending[m]
            expected = self._expected
            complete = self.close_on_expected and bool(expected) and expected <= bucket.index.keys()
            moved_on = self._moved[m] >= self._quorum(max(len(expected), len(bucket), 1))
            # the wait starts at the minute's first tick, and never before the minute has ended on the
            # wall clock: a tick stamped ahead cannot start it early (live); history is long past (replay)
            waited = now - max(self._first[m], (m + 1) * 60.0) >= self.wait_seconds
            if not (flush or complete or moved_on or waited):
                break  # minutes close in order
            self._pending.pop(m)
            self._first.pop(m)
            self._moved.pop(m)
            out.append(Batch(m, *bucket.arrays(), self._last.pop(m)))
            self.last_closed = m
            self._expected = frozenset(bucket.index)
        return out

    def _quorum(self, n: int) -> int:
        """Tokens needed of ``n``: more than the ``quorum`` share (a strict majority by default)."""
        return min(n, math.floor(self.quorum * n) + 1)

    def _later(self, m: int) -> int:
        """How many tokens have a tick at a minute later than ``m``."""
        return sum(1 for v in self._newest.values() if v > m)

    def _recount_moved(self) -> None:
        self._moved = {m: self._later(m) for m in self._pending}

    def _drop_minute(self, m: int) -> _Minute:
        """Take an unclosed minute out (its ticks, returned, go nowhere else)."""
        del self._first[m], self._last[m], self._moved[m]
        return self._pending.pop(m)

    def _demote(self, first: int) -> None:
        """Move the unclosed minutes from ``first`` on back to the deferred ticks."""
        tokens: set[str] = set()
        for m in sorted(k for k in self._pending if k >= first):
            bucket = self._drop_minute(m)
            self._deferred.extend(bucket.as_ticks(m))
            tokens |= bucket.index.keys()
        held = dict(self._pending)
        if self._stragglers is not None:
            held[self.last_closed] = self._stragglers
        for t in tokens:  # a token's newest minute is what it still has batched
            newest = max((m for m, b in held.items() if t in b.index), default=None)
            if newest is None:
                self._newest.pop(t, None)
            else:
                self._newest[t] = newest
        self._recount_moved()

    def _promote(self, now: float) -> None:
        """When the feed has jumped ahead, the watermark moves to just before the earliest deferred tick;
        then the deferred ticks within reach join their minutes."""
        w = self.watermark
        assert w is not None
        assert self.max_ahead is not None
        expected = self._expected
        ahead = {t.token for t in self._deferred} & expected
        jumped = bool(expected) and len(ahead) >= self._quorum(len(expected))
        near = any(m <= w + self.max_ahead for m in self._pending)
        # or the feed went on ahead and has said nothing near the watermark since, for the wait (a feed
        # that merely paused has sent nothing ahead since: one deferred tick alone cannot end a pause)
        silent = not near and self._deferred_at > self._near_at and now - self._near_at >= self.wait_seconds
        if jumped or silent:
            self._floor = max(self._floor, min(t.minute for t in self._deferred) - 1)
        self._promote_within(now)

    def _promote_within(self, now: float) -> None:
        """Deferred ticks the watermark has come within reach of join their minutes, in arrival order."""
        w = self.watermark
        assert w is not None
        assert self.max_ahead is not None
        self._promoted_at = w
        reach = w + self.max_ahead
        if all(t.minute > reach for t in self._deferred):
            return
        keep = []
        for t in self._deferred:
            if t.minute > reach:
                keep.append(t)
            else:  # its wait starts now: the rest of its minute may still be arriving
                reason = self._batch(t, now)
                if reason is not None:
                    self.ignored_later[reason] += 1
        self._deferred = keep
        # they landed near the watermark after all: what is still deferred arrived before them, so the
        # feed falling silent from here is a pause, not a jump ahead
        self._near_at = max(self._near_at, now)

    def state(self) -> BatcherState:
        """Everything needed to go on exactly: the position, each token's newest minute, the expected
        tokens, and the unclosed minutes with their ticks and arrival times."""
        pending = [PendingMinute(m, self._first[m], self._last[m], bucket.as_ticks(m))
                   for m, bucket in sorted(self._pending.items())]  # fmt: skip
        if self._stragglers is not None:  # the one pending minute at (not past) the newest closed one
            pending.insert(0, PendingMinute(self.last_closed, *self._straggler_times,
                                            self._stragglers.as_ticks(self.last_closed)))  # fmt: skip
        return BatcherState(self.last_closed, dict(self._newest), sorted(self._expected), pending,
                            list(self._deferred))  # fmt: skip

    def load_state(self, state: BatcherState) -> None:
        self.last_closed = state.last_closed
        self._newest = dict(state.newest)
        self._expected = frozenset(state.expected)
        self._pending = {}
        self._stragglers = None
        for p in state.pending:
            bucket = _Minute()
            for t in p.ticks:
                bucket.put(t)
            if p.minute <= state.last_closed:
                self._stragglers, self._straggler_times = bucket, (p.first, p.last)
            else:
                self._pending[p.minute] = bucket
        opened = [p for p in state.pending if p.minute > state.last_closed]
        self._first = {p.minute: p.first for p in opened}
        self._last = {p.minute: p.last for p in opened}
        self._recount_moved()
        self._deferred = list(state.deferred)

    @property
    def deferred(self) -> int:
        return len(self._deferred)

    @property
    def tracked(self) -> int:
        """Tokens known (seen and not forgotten)."""
        return len(self._newest)

    def knows(self, token: str) -> bool:
        return token in self._newest

    def resume(self, now: float) -> None:
        """Restart the wait of every unclosed minute at ``now``: after a restart, the time the daemon was
        down must not close a minute before the broker has redelivered the rest of its ticks."""
        for m in self._first:
            self._first[m] = now

    def withdraw(self, tokens: list[str]) -> int:
        """Forget these tokens and take their ticks out of the unclosed minutes (and the deferred ones);
        how many ticks were taken."""
        drop = set(tokens)
        taken = 0
        if self._stragglers is not None:
            for t in drop & self._stragglers.index.keys():
                self._stragglers.drop(t)
                taken += 1
            if not self._stragglers.index:
                self._stragglers = None
        for m in list(self._pending):
            bucket = self._pending[m]
            for t in drop & bucket.index.keys():
                bucket.drop(t)
                taken += 1
            if not bucket.index:
                self._drop_minute(m)
        kept = [t for t in self._deferred if t.token not in drop]
        taken += len(self._deferred) - len(kept)
        self._deferred = kept
        self.forget(tokens)
        self._recount_moved()
        return taken

    def forget(self, tokens: list[str]) -> None:
        for t in tokens:
            self._newest.pop(t, None)
