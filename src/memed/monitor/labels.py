"""Delayed labels: a served probability for minute ``t`` and horizon ``h`` is labelled when the token's
first bar at or after ``t + h`` arrives, with the trainer's own rule (:mod:`memed.trainers.labels`):
``up = close(t+h) > close(t)``, where ``close(t+h)`` is the last close at or before ``t+h`` (that bar's
close when it is at ``t+h``, else the token's previous close: a missing bar means no trade); ties are
left out (``ties = "exclude"``) or down.

Pending records live in per-token ring buffers, one per horizon, of ``h / interval`` slots: the record
of minute ``t`` sits in slot ``(t / interval) mod (h / interval)`` and is resolved, at the latest, by the
bar of minute ``t + h`` — before that bar's own record takes the slot. Memory is fixed per token:
``sum(h / interval)`` slots of ``29 + 8 x members`` bytes (1,545 slots, 57 KB with four ensemble
members, for 15 m … 12 h on 1-minute bars).

Within a minute, tokens are taken in sorted order, so whoever feeds the same bars and probabilities —
the daemon minute by minute, the backtester from its replay — gets the same resolutions in the same
order, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


@dataclass
class Resolved:
    """The labels one minute resolved, for one horizon."""

    horizon: int
    p: np.ndarray  # float64: the (ensemble) probability served at t
    y: np.ndarray  # float64: 1 up, 0 down
    buy: np.ndarray  # bool: the signal at t was a BUY (long)
    members: np.ndarray | None = None
    """[m, members] each ensemble member's calibrated probability at t (NaN: it did not score)."""
    r: np.ndarray | None = None
    """The BUY plan's R-multiple marked at the horizon: ``(close(t+h) - entry) / (entry - stop)`` (NaN for
    rows that were no BUY, or had no stop)."""


class DelayedLabels:
    def __init__(self, horizons: tuple[int, ...], interval_minutes: int = 1,
                 ties: Literal["exclude", "down"] = "exclude", members: int = 0) -> None:  # fmt: skip
        self.horizons = horizons
        self.members = members
        self.interval = interval_minutes
        self.ties = ties
        self.slots = [max(1, h // interval_minutes) for h in horizons]
        self.index: dict[str, int] = {}
        self._cap = 0
        self._t = [np.empty((0, n), np.int32) for n in self.slots]
        self._close = [np.empty((0, n), np.float64) for n in self.slots]
        self._p = [np.empty((0, n), np.float64) for n in self.slots]
        self._buy = [np.empty((0, n), np.bool_) for n in self.slots]
        self._unit = [np.empty((0, n), np.float64) for n in self.slots]
        self._mp = [np.empty((0, n, members), np.float64) for n in self.slots]
        self._last = np.empty(0, np.int64)
        self._last_close = np.empty(0, np.float64)

    @property
    def bytes_per_token(self) -> int:
        return sum(self.slots) * (4 + 8 + 8 + 1 + 8 + 8 * self.members) + 16

    def _rows(self, tokens: list[str]) -> np.ndarray:
        rows = np.empty(len(tokens), np.int64)
        for i, t in enumerate(tokens):
            r = self.index.get(t)
            if r is None:
                r = self.index[t] = len(self.index)
            rows[i] = r
        if len(self.index) > self._cap:
            self._grow(max(len(self.index), 2 * self._cap, 64))
        return rows

    def _grow(self, cap: int) -> None:
        extra = cap - self._cap
        for k, n in enumerate(self.slots):
            self._t[k] = np.vstack([self._t[k], np.full((extra, n), -1, np.int32)])
            self._close[k] = np.vstack([self._close[k], np.zeros((extra, n))])
            self._p[k] = np.vstack([self._p[k], np.zeros((extra, n))])
            self._buy[k] = np.vstack([self._buy[k], np.zeros((extra, n), np.bool_)])
            self._unit[k] = np.vstack([self._unit[k], np.zeros((extra, n))])
            self._mp[k] = np.vstack([self._mp[k], np.zeros((extra, n, self.members))])
        self._last = np.concatenate([self._last, np.full(extra, -1, np.int64)])
        self._last_close = np.concatenate([self._last_close, np.zeros(extra)])
        self._cap = cap

    def forget(self, tokens: list[str]) -> None:
        """Drop these tokens' pending records (an evicted or restarted token)."""
        for t in tokens:
            r = self.index.get(t)
            if r is not None:
                for k in range(len(self.slots)):
                    self._t[k][r] = -1
                self._last[r] = -1

    def update(self, tokens: list[str], minute: int, close: np.ndarray, p: np.ndarray, buy: np.ndarray,
               unit: np.ndarray | None = None, members: np.ndarray | None = None
               ) -> list[Resolved]:  # fmt: skip
        """One minute's bars and what was served on them: ``p`` [n, H] (NaN: not served, never scored),
        ``buy`` [n]; ``unit`` [n] the BUY plans' risk per unit (entry - stop; NaN: none), ``members``
        [n, H, members] each member's probability. Returns the labels this minute resolved, per horizon."""
        order = np.argsort(np.asarray(tokens, dtype=object), kind="stable")
        tokens = [tokens[i] for i in order]
        close, p, buy = np.asarray(close)[order], np.asarray(p)[order], np.asarray(buy)[order]
        n_rows = len(tokens)
        unit = np.full(n_rows, np.nan) if unit is None else np.asarray(unit, np.float64)[order]
        mp = (
            np.full((n_rows, len(self.horizons), self.members), np.nan) if members is None else members[order]
        )
        rows = self._rows(tokens)
        gap = self._last[rows] < minute - self.interval  # the token skipped minutes (or is new)
        out = []
        g = np.flatnonzero(gap)
        steady = np.flatnonzero(~gap)
        for k, h in enumerate(self.horizons):
            n = self.slots[k]
            t, c0, pk, bk, uk, mk = (self._t[k], self._close[k], self._p[k], self._buy[k], self._unit[k],
                                     self._mp[k])  # fmt: skip
            slot = (minute // self.interval) % n
            # the common case: the record of minute - h, in this minute's slot
            hit = steady[t[rows[steady], slot] == minute - h]
            ri, si = hit, np.full(len(hit), slot)
            if len(g):  # after skipped minutes, older records may be due too
                tg = t[rows[g]]
                gi, gs = np.nonzero((tg >= 0) & (tg + h <= minute))
                ri, si = np.r_[ri, g[gi]], np.r_[si, gs]
            if len(ri):
                r = rows[ri]
                at = t[r, si]
                fut = np.where(at + h == minute, close[ri], self._last_close[r])
                base = c0[r, si]
                tie = np.nan if self.ties == "exclude" else 0.0
                y = np.where(fut > base, 1.0, np.where(fut < base, 0.0, tie))
                keep = ~np.isnan(y) & ~np.isnan(pk[r, si])
                b = bk[r, si][keep]
                with np.errstate(divide="ignore", invalid="ignore"):
                    rm = np.where(b, (fut - base)[keep] / uk[r, si][keep], np.nan)
                out.append(Resolved(h, pk[r, si][keep], y[keep], b, mk[r, si][keep], rm))
                t[r, si] = -1
            t[rows, slot] = np.where(np.isnan(p[:, k]), -1, minute)
            c0[rows, slot] = close
            pk[rows, slot] = p[:, k]
            bk[rows, slot] = buy
            uk[rows, slot] = unit
            mk[rows, slot] = mp[:, k]
        self._last[rows] = minute
        self._last_close[rows] = close
        return out

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, object]:
        n = len(self.index)
        return {
            "tokens": list(self.index),
            "t": [a[:n].tobytes() for a in self._t],
            "close": [a[:n].tobytes() for a in self._close],
            "p": [a[:n].tobytes() for a in self._p],
            "buy": [a[:n].tobytes() for a in self._buy],
            "unit": [a[:n].tobytes() for a in self._unit],
            "members": [a[:n].tobytes() for a in self._mp],
            "last": self._last[:n].tobytes(),
            "last_close": self._last_close[:n].tobytes(),
        }

    def load(self, doc: dict[str, Any]) -> None:
        tokens: list[str] = doc["tokens"]
        self.index = {t: i for i, t in enumerate(tokens)}
        n = len(tokens)
        self._cap = n
        for k, width in enumerate(self.slots):
            self._t[k] = np.frombuffer(doc["t"][k], np.int32).reshape(n, width).copy()
            self._close[k] = np.frombuffer(doc["close"][k], np.float64).reshape(n, width).copy()
            self._p[k] = np.frombuffer(doc["p"][k], np.float64).reshape(n, width).copy()
            self._buy[k] = np.frombuffer(doc["buy"][k], np.bool_).reshape(n, width).copy()
            self._unit[k] = np.frombuffer(doc["unit"][k], np.float64).reshape(n, width).copy()
            self._mp[k] = np.frombuffer(doc["members"][k], np.float64).reshape(n, width, self.members).copy()
        self._last = np.frombuffer(doc["last"], np.int64).copy()
        self._last_close = np.frombuffer(doc["last_close"], np.float64).copy()
