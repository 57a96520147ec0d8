"""Each token's latest signal (``/signals/latest``, the demo's table), kept as columns.

The minute loop merges each minute's :class:`~memed.signals.frame.SignalFrame` into one frame of every
token's newest row (a few polars operations, no Python object per token); a :class:`Signal` is decoded
only when one is read. A model set with other horizons cannot share the frame's struct column: the rows
the new set has not yet replaced are then kept, exactly as they were sent, as decoded signals until
their tokens signal again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import msgspec
import polars as pl

from memed.signals.frame import SignalFrame
from memed.signals.schema import Signal

MAX_CHUNKS = 16
"""Minutes merged before the frame is made contiguous again."""


class LatestSignals(Mapping[str, Signal]):
    def __init__(self) -> None:
        self._frame: pl.DataFrame | None = None
        self._older: dict[str, Signal] = {}
        """Signals of an earlier horizon layout not yet replaced."""

    def update(self, signals: SignalFrame) -> None:
        new = signals.frame
        if not new.height:
            return
        old = self._frame
        if old is None:
            self._frame = new
        else:
            kept = old.filter(~pl.col("token").is_in(new.get_column("token")))
            if kept.schema == new.schema:
                self._frame = pl.concat([kept, new], rechunk=False)
            else:
                self._older.update(zip(kept.get_column("token").to_list(), SignalFrame(kept).signals(),
                                       strict=True))  # fmt: skip
                self._frame = new
        if self._older:
            for token in new.get_column("token").to_list():
                self._older.pop(token, None)
        if self._frame is not None and self._frame.n_chunks() > MAX_CHUNKS:
            self._frame = self._frame.rechunk()

    def forget(self, tokens: list[str]) -> None:
        if self._frame is not None and tokens:
            self._frame = self._frame.filter(~pl.col("token").is_in(tokens))
        for token in tokens:
            self._older.pop(token, None)

    def __getitem__(self, token: str) -> Signal:
        if self._frame is not None:
            row = self._frame.filter(pl.col("token") == token)
            if row.height:
                return SignalFrame(row).signals()[0]
        return self._older[token]

    def __iter__(self) -> Iterator[str]:
        if self._frame is not None:
            yield from self._frame.get_column("token").to_list()
        yield from self._older

    def __len__(self) -> int:
        return (self._frame.height if self._frame is not None else 0) + len(self._older)

    def json(self) -> bytes:
        """Every token's latest signal as one JSON object keyed by token."""
        every = dict(self._older)
        if self._frame is not None:
            frame = SignalFrame(self._frame)
            every.update(zip(frame.tokens(), frame.signals(), strict=True))
        return msgspec.json.encode(every)


__all__ = ["LatestSignals"]
