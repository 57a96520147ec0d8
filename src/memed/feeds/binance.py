"""Binance klines. The websocket stream ``<symbol>@kline_1m`` sends
``{"e": "kline", "E": ..., "s": "PEPEUSDT", "k": {"t": open ms, "T": close ms, "i": "1m", "o": "0.1",
"h": ..., "l": ..., "c": ..., "v": base volume, "n": trades, "x": final?, ...}}`` (numbers as strings;
a combined stream wraps it as ``{"stream": ..., "data": {...}}``) many times per bar: only the event
with ``x: true`` is a bar. REST ``/api/v3/klines`` (and ``/fapi/v1/klines``) returns rows
``[open ms, o, h, l, c, v, close ms, quote volume, trades, taker buy base, taker buy quote, ignore]``
whose last row is the bar still forming: only rows closed before ``now`` are bars."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from memed.feeds.ticks import FeedError, FeedTick, number

TokenOf = Callable[[str], str]


def same(symbol: str) -> str:
    return symbol


def kline_event(msg: Mapping[str, Any], token_of: TokenOf = same) -> list[FeedTick]:
    """A websocket kline event → its bar when final, else nothing."""
    data = msg.get("data", msg) if isinstance(msg, Mapping) else None
    if not isinstance(data, Mapping) or data.get("e") != "kline" or not isinstance(data.get("k"), Mapping):
        raise FeedError("not a Binance kline event ({'e': 'kline', 'k': {...}})")
    k = data["k"]
    if k.get("x") is not True:
        return []
    return [_bar(token_of(str(k.get("s") or data.get("s"))), k["t"], k["o"], k["h"], k["l"], k["c"], k["v"])]


def rest_klines(symbol: str, rows: Any, now_ms: float, token_of: TokenOf = same) -> list[FeedTick]:
    """REST kline rows → the bars that have closed by ``now_ms``."""
    if not isinstance(rows, list):
        raise FeedError("Binance klines: expected a list of rows")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 7:  # noqa: PLR2004 - open..close time
            raise FeedError(f"Binance kline row {row!r}: expected [open ms, o, h, l, c, v, close ms, ...]")
        if number(row[6], "close time") >= now_ms:
            continue  # still forming
        out.append(_bar(token_of(symbol), row[0], row[1], row[2], row[3], row[4], row[5]))
    return out


def _bar(token: str, t: Any, o: Any, h: Any, lo: Any, c: Any, v: Any) -> FeedTick:
    ms = number(t, "open time")
    return FeedTick(token, int(ms // 60_000) * 60, number(o, "open"), number(h, "high"), number(lo, "low"),
                    number(c, "close"), number(v, "volume"))  # fmt: skip
