"""The token table: which row of every per-token state array belongs to which token.

One table serves the feature stream and everything the decision path keeps per token (books, model
state), so a token has the same row everywhere and is added, evicted and snapshotted once. Rows are
handed out from a free list; capacity grows in large steps (first touch of fresh memory is slow on these
machines), and owners of per-row arrays grow them to :attr:`TokenTable.capacity` when it changes. A row
freed by eviction is handed out again: :meth:`TokenTable.assign` says which rows are new so that each
owner resets its state there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

GROW_ROWS = 4096
"""Rows added at once (at least; a table doubles once it is larger)."""


class TokenTable:
    def __init__(self, capacity: int = GROW_ROWS) -> None:
        self.capacity = max(capacity, 1)
        self._index: dict[str, int] = {}
        self._free: list[int] = list(range(self.capacity - 1, -1, -1))

    def __len__(self) -> int:
        return len(self._index)

    @property
    def tokens(self) -> list[str]:
        """Every token held, in the order they were added."""
        return list(self._index)

    def row(self, token: str) -> int | None:
        return self._index.get(token)

    def rows(self, tokens: Iterable[str]) -> np.ndarray:
        """Rows of tokens the table holds (KeyError for one it does not)."""
        index = self._index
        return np.array([index[t] for t in tokens], dtype=np.int64)

    def assign(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``tokens``, adding the ones not held yet; and a mask of the rows just handed out (the
        first occurrence of a new token), whose state every owner must reset."""
        lookup = self._index.get
        found = [lookup(t) for t in tokens]
        new = np.zeros(len(found), dtype=bool)
        if None in found:  # new tokens (rare after the first minutes)
            for i, (token, row) in enumerate(zip(tokens, found, strict=True)):
                if row is None:
                    again = lookup(token)  # a token twice in one call is added once
                    new[i] = again is None
                    found[i] = self._add(token) if again is None else again
        return np.array(found, dtype=np.int64), new

    def _add(self, token: str) -> int:
        if not self._free:
            old = self.capacity
            self.capacity = old + max(GROW_ROWS, old)
            self._free.extend(range(self.capacity - 1, old - 1, -1))
        row = self._free.pop()
        self._index[token] = row
        return row

    def release(self, tokens: Iterable[str]) -> None:
        """Forget tokens; their rows go back to the free list."""
        for token in tokens:
            row = self._index.pop(token, None)
            if row is not None:
                self._free.append(row)


def fit_rows(array: np.ndarray, capacity: int, fill: float, axis: int = 0) -> np.ndarray:
    """``array`` grown along ``axis`` to ``capacity`` rows (new rows set to ``fill``); itself when large
    enough."""
    have = array.shape[axis]
    if have >= capacity:
        return array
    shape = list(array.shape)
    shape[axis] = capacity - have
    return np.concatenate([array, np.full(shape, fill, dtype=array.dtype)], axis=axis)
