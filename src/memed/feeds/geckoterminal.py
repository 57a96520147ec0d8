"""GeckoTerminal pool OHLCV: ``GET /networks/{network}/pools/{pool}/ohlcv/minute?aggregate=1`` returns
``{"data": {"attributes": {"ohlcv_list": [[ts s, o, h, l, c, volume usd], ...]}}, "meta": {"base":
{"address": ..., "symbol": ...}, "quote": {...}}}``, newest first. Minutes without trades are absent
unless ``include_empty_intervals=true`` (memed's gap rule treats absence as silence either way). The
newest bar may still be forming: only bars whose minute has ended by ``now`` are returned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memed.feeds.ticks import FeedError, FeedTick, number


def ohlcv(
    payload: Mapping[str, Any], now: float, token: str | None = None, interval_s: int = 60
) -> list[FeedTick]:
    """The payload's finished bars, oldest first; ``token`` defaults to the base token's address."""
    try:
        rows = payload["data"]["attributes"]["ohlcv_list"]
    except (KeyError, TypeError):
        raise FeedError("not a GeckoTerminal OHLCV response (data.attributes.ohlcv_list)") from None
    if token is None:
        base = (payload.get("meta") or {}).get("base") or {}
        token = base.get("address")
        if not isinstance(token, str) or not token:
            raise FeedError("GeckoTerminal OHLCV: no meta.base.address; pass the token")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 6:  # noqa: PLR2004 - ts, o, h, l, c, v
            raise FeedError(f"GeckoTerminal ohlcv row {row!r}: expected [ts, o, h, l, c, v]")
        ts = int(number(row[0], "ts"))
        if ts + interval_s > now:
            continue  # still forming
        o, h, lo, c, v = (number(x, f"ohlcv[{i}]") for i, x in enumerate(row[1:], 1))
        out.append(FeedTick(token, ts - ts % 60, o, h, lo, c, v))
    return sorted(out, key=lambda t: t.ts)
