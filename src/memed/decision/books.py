"""Per-token books the policy needs besides the features: dead detection and the traded-notional EWMA.

A token's book is three float64: its last close, the minute that close last changed, and a 30-bar EWMA of
traded notional (close x volume) that caps position sizes. One compiled step, :func:`advance_book`,
updates it by one bar; the minute driver (:meth:`Books.step`) calls it for one minute's tokens, the
history driver (:func:`books_over_history`) for every bar of every token, so both compute the same
numbers bit for bit, as both feature drivers call the kernel's ``advance``. A fresh book is all NaN: the
token's first bar sets its close and change time (so a token is never dead on its first bar).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from memed.features.tokens import fit_rows
from memed.signals.risk import NOTIONAL_ALPHA

BOOK_FIELDS = ("last_close", "last_change", "notional")
LAST_CLOSE, LAST_CHANGE, NOTIONAL = range(len(BOOK_FIELDS))


@njit(cache=True, inline="always")
def advance_book(book: np.ndarray, ts: float, close: float, traded: float, dead_minutes: float,
                 alpha: float) -> bool:  # fmt: skip
    """One bar (``ts`` in epoch minutes, ``traded`` = close x volume) of one token's ``book``; returns
    whether the token is dead (its close unchanged for ``dead_minutes``)."""
    if np.isnan(book[LAST_CHANGE]):  # the token's first bar
        book[LAST_CLOSE] = close
        book[LAST_CHANGE] = ts
    if close != book[LAST_CLOSE]:
        book[LAST_CHANGE] = ts
    book[LAST_CLOSE] = close
    prev = book[NOTIONAL]
    book[NOTIONAL] = traded if np.isnan(prev) else prev + alpha * (traded - prev)
    dead: bool = ts - book[LAST_CHANGE] >= dead_minutes
    return dead


@njit(cache=True, nogil=True)
def _minute(books: np.ndarray, rows: np.ndarray, ts: float, close: np.ndarray, traded: np.ndarray,
            dead_minutes: float, alpha: float, dead: np.ndarray, notional: np.ndarray) -> None:  # fmt: skip
    for k in range(len(rows)):
        book = books[rows[k]]
        dead[k] = advance_book(book, ts, close[k], traded[k], dead_minutes, alpha)
        notional[k] = book[NOTIONAL]


@njit(cache=True, nogil=True)
def _history(starts: np.ndarray, ts: np.ndarray, close: np.ndarray, traded: np.ndarray, dead_minutes: float,
             alpha: float, dead: np.ndarray, notional: np.ndarray) -> None:  # fmt: skip
    book = np.empty(len(BOOK_FIELDS))
    for g in range(len(starts) - 1):
        book[:] = np.nan
        for i in range(starts[g], starts[g + 1]):
            dead[i] = advance_book(book, ts[i], close[i], traded[i], dead_minutes, alpha)
            notional[i] = book[NOTIONAL]


def books_over_history(
    starts: np.ndarray, ts: np.ndarray, close: np.ndarray, volume: np.ndarray, dead_minutes: float
) -> tuple[np.ndarray, np.ndarray]:
    """Every bar's dead flag and notional EWMA; token ``g`` is rows ``starts[g] .. starts[g+1]`` in time
    order, each from a fresh book."""
    dead = np.empty(len(ts), dtype=bool)
    notional = np.empty(len(ts))
    _history(starts, ts, close, close * volume, float(dead_minutes), NOTIONAL_ALPHA, dead, notional)
    return dead, notional


class Books:
    """The books of every token, one row per row of the decision path's token table."""

    def __init__(self, dead_minutes: float) -> None:
        self.dead_minutes = float(dead_minutes)
        self.books = np.full((0, len(BOOK_FIELDS)), np.nan)

    def fit(self, capacity: int) -> None:
        self.books = fit_rows(self.books, capacity, np.nan)

    def reset(self, rows: np.ndarray) -> None:
        self.books[rows] = np.nan

    def step(
        self, rows: np.ndarray, ts: float, close: np.ndarray, volume: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One minute's bar for each token at ``rows``: its dead flag and notional EWMA."""
        dead = np.empty(len(rows), dtype=bool)
        notional = np.empty(len(rows))
        _minute(self.books, rows, float(ts), close, close * volume, self.dead_minutes, NOTIONAL_ALPHA, dead,
                notional)  # fmt: skip
        return dead, notional

    def snapshot(self, rows: np.ndarray) -> dict[str, bytes]:
        return {
            name: np.ascontiguousarray(self.books[rows, k]).tobytes() for k, name in enumerate(BOOK_FIELDS)
        }

    def restore(self, doc: dict[str, bytes], rows: np.ndarray) -> None:
        for k, name in enumerate(BOOK_FIELDS):
            self.books[rows, k] = np.frombuffer(doc[name])
