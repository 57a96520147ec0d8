"""Which part of a dataset a command works on: one bar interval, a time range, some tokens, and which
non-price freqtrade candle types to import (``[data]`` in the configuration; ``--timeframe``,
``--timerange`` and ``--tokens`` on the commands that read data)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from memed.data.freqtrade import timeframe_minutes

_DAY = re.compile(r"^\d{8}$")


def _bound(text: str, which: str) -> datetime | None:
    if not text:
        return None
    if _DAY.match(text):
        return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC)
    if text.isdigit():  # freqtrade also takes unix seconds (or milliseconds)
        n = int(text)
        return datetime.fromtimestamp(n / 1000 if n > 10**11 else n, tz=UTC)
    raise ValueError(f"timerange {which} {text!r}: expected YYYYMMDD or unix seconds")


def parse_timerange(text: str) -> tuple[datetime | None, datetime | None]:
    """freqtrade's ``START-END`` (``20260101-20260201``, ``20260101-``, ``-20260201``; days or unix
    seconds): bars from START (inclusive) until END (exclusive)."""
    if "-" not in text:
        raise ValueError(
            f"timerange {text!r}: expected START-END, e.g. 20260101-20260201 (either may be empty)"
        )
    a, b = text.strip().split("-", 1)
    start, end = _bound(a, "start"), _bound(b, "end")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"timerange {text!r}: the end is not after the start")
    return start, end


@dataclass(frozen=True)
class Selection:
    timeframe: int | None = None
    """Bar interval in minutes to import; None: every file, refused if intervals are mixed."""
    start: datetime | None = None
    end: datetime | None = None
    tokens: frozenset[str] | None = None
    candle_types: frozenset[str] = frozenset()
    """Non-price freqtrade candle types (mark, index, premiumIndex, funding_rate) to import too."""

    @classmethod
    def of(cls, timeframe: str = "", timerange: str = "", tokens: Sequence[str] = (),
           candle_types: Sequence[str] = ()) -> Selection:  # fmt: skip
        start, end = parse_timerange(timerange) if timerange else (None, None)
        return cls(
            timeframe_minutes(timeframe) if timeframe else None,
            start,
            end,
            frozenset(tokens) if tokens else None,
            frozenset(candle_types),
        )

    def keeps_token(self, token: str) -> bool:
        return self.tokens is None or token in self.tokens

    def filter(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of the selected tokens and time range."""
        conds = []
        if self.tokens is not None:
            conds.append(pl.col("token").is_in(sorted(self.tokens)))
        if self.start is not None:
            conds.append(pl.col("ts") >= self.start)
        if self.end is not None:
            conds.append(pl.col("ts") < self.end)
        return frame.filter(*conds) if conds else frame

    def describe(self) -> str:
        parts = []
        if self.timeframe is not None:
            parts.append(f"timeframe {self.timeframe} min")
        if self.start or self.end:
            parts.append(f"time {self.start or '…'} to {self.end or '…'}")
        if self.tokens is not None:
            parts.append(f"{len(self.tokens)} token(s)")
        return ", ".join(parts) or "everything"
