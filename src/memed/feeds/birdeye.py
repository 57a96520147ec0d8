"""Birdeye OHLCV: ``GET /defi/ohlcv?address=...&type=1m`` returns ``{"success": true, "data": {"items":
[{"address": ..., "unixTime": s, "o": ..., "h": ..., "l": ..., "c": ..., "v": ..., "type": "1m"}]}}``,
oldest first. The newest item may still be forming: only bars whose minute has ended are returned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memed.feeds.ticks import FeedError, FeedTick, number


def ohlcv(
    payload: Mapping[str, Any], now: float, token: str | None = None, interval_s: int = 60
) -> list[FeedTick]:
    if payload.get("success") is False:
        raise FeedError(f"Birdeye answered success=false: {payload.get('message', '')!r}")
    try:
        items = payload["data"]["items"]
    except (KeyError, TypeError):
        raise FeedError("not a Birdeye OHLCV response (data.items)") from None
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            raise FeedError(f"Birdeye item {item!r} is not an object")
        name = token or item.get("address")
        if not isinstance(name, str) or not name:
            raise FeedError("Birdeye item without an address; pass the token")
        ts = int(number(item.get("unixTime"), "unixTime"))
        if ts + interval_s > now:
            continue
        o, h, lo, c, v = (number(item.get(k), k) for k in ("o", "h", "l", "c", "v"))
        out.append(FeedTick(name, ts - ts % 60, o, h, lo, c, v))
    return sorted(out, key=lambda t: t.ts)
