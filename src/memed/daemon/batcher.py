"""Micro-batching by event-time minute, with a written backpressure policy.

* Ticks are conflated latest-per-token within a minute (each replacement counted as ``replaced``; an
  identical resend as ``duplicate``).
* A token's tick older than its newest seen minute is ``out_of_order``; a tick for a minute already
  processed is ``late``. All are counted and ignored, never re-emitted.
* Minute ``m`` closes, oldest first, when every expected token (those of the previous closed minute) has
  ticked, when a quorum of tokens (more than ``quorum`` of the expected ones, or of the minute's own
  where more: a strict majority by default) has moved on to a later minute (feeds publish in time
  order), or ``wait_seconds`` after its first tick arrived and after the minute ended on the wall
  clock. One token cannot close a minute for the others: a tick stamped ahead (a clock that runs
  fast, or an attacker) is held in its own minute, which closes in its turn, and changes no other
  token's bars.
  With one message per tick, a *new* token's tick can arrive after the expected ones have closed the
  minute (it is then ``late``); ``close_on_expected=False`` waits for the quorum or the timeout instead.

The wall clock is used only to time the wait; what leaves the batcher is event time.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from memed.daemon.checkpoint import BatcherState, PendingMinute
from memed.daemon.ticks import Tick


@dataclass
class Batch:
    minute: int
    ticks: list[Tick]
    last_arrival: float  # wall clock of the batch's last accepted tick (latency metric)


@dataclass
class MinuteBatcher:
    wait_seconds: float
    close_on_expected: bool = True
    quorum: float = 0.5
    counts: Counter[str] = field(default_factory=Counter)
    last_closed: int = -1
    _pending: dict[int, dict[str, Tick]] = field(default_factory=dict)
    _first: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _newest: dict[str, int] = field(default_factory=dict)
    _expected: frozenset[str] = frozenset()
    _moved: dict[int, int] = field(default_factory=dict)
    """Per unclosed minute: how many tokens have a tick at a later minute."""

    def add(self, tick: Tick, now: float) -> str | None:
        """Accept a tick; returns the reason when it is ignored."""
        m = tick.minute
        if m <= self.last_closed:
            return self._count("late")
        newest = self._newest.get(tick.token, -1)
        if m < newest:
            return self._count("out_of_order")
        bucket = self._pending.get(m)
        if bucket is None:
            bucket = self._pending[m] = {}
            self._moved[m] = sum(1 for v in self._newest.values() if v > m)
        prev = bucket.get(tick.token)
        if prev is not None:
            if prev == tick:
                return self._count("duplicate")
            self.counts["replaced"] += 1
        bucket[tick.token] = tick
        if m > newest:  # this token moves on past the unclosed minutes in [newest, m)
            for p in self._moved:
                if newest <= p < m:
                    self._moved[p] += 1
        self._newest[tick.token] = m
        self._first.setdefault(m, now)
        self._last[m] = now
        return None

    def _count(self, reason: str) -> str:
        self.counts[reason] += 1
        return reason

    def due(self, now: float, *, flush: bool = False) -> list[Batch]:
        """Batches ready to process, oldest first (``flush``: everything pending)."""
        out = []
        for m in sorted(self._pending):
            bucket = self._pending[m]
            expected = self._expected
            complete = self.close_on_expected and bool(expected) and expected <= bucket.keys()
            n = max(len(expected), len(bucket), 1)
            quorum = min(n, math.floor(self.quorum * n) + 1)  # more than the share: a strict majority
            moved_on = self._moved[m] >= quorum
            # the wait starts at the minute's first tick, and never before the minute has ended on the
            # wall clock: a tick stamped ahead cannot start it early (live); history is long past (replay)
            waited = now - max(self._first[m], (m + 1) * 60.0) >= self.wait_seconds
            if not (flush or complete or moved_on or waited):
                break  # minutes close in order
            self._pending.pop(m)
            self._first.pop(m)
            self._moved.pop(m)
            out.append(Batch(m, list(bucket.values()), self._last.pop(m)))
            self.last_closed = m
            self._expected = frozenset(bucket)
        return out

    def state(self) -> BatcherState:
        """Everything needed to go on exactly: the position, each token's newest minute, the expected
        tokens, and the unclosed minutes with their ticks and arrival times."""
        pending = [PendingMinute(m, self._first[m], self._last[m], list(bucket.values()))
                   for m, bucket in sorted(self._pending.items())]  # fmt: skip
        return BatcherState(self.last_closed, dict(self._newest), sorted(self._expected), pending)

    def load_state(self, state: BatcherState) -> None:
        self.last_closed = state.last_closed
        self._newest = dict(state.newest)
        self._expected = frozenset(state.expected)
        self._pending = {p.minute: {t.token: t for t in p.ticks} for p in state.pending}
        self._first = {p.minute: p.first for p in state.pending}
        self._last = {p.minute: p.last for p in state.pending}
        self._moved = {m: sum(1 for v in self._newest.values() if v > m) for m in self._pending}

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

    def forget(self, tokens: list[str]) -> None:
        for t in tokens:
            self._newest.pop(t, None)
