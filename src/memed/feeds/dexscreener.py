"""DexScreener pair snapshots (``GET /latest/dex/pairs/{chain}/{pairs}``, ``/tokens/v1/{chain}/{addresses}``):
``{"pairs": [{"pairAddress", "baseToken": {"address", "symbol"}, "priceUsd": "0.0012", "priceNative",
"txns": {"m5": {"buys", "sells"}, "h1": ...}, "volume": {"m5", "h1", ...}, "liquidity": {"usd", ...},
"fdv", "marketCap", ...}]}`` (the tokens endpoint returns the list itself). No candles: a snapshot
enriches bars from another source with liquidity (USD), buys and sells (the last five minutes' counts
per minute) and market cap (``marketCap``, else ``fdv``), or stands in as a flat price tick."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from memed.feeds.ticks import FeedError, FeedTick, minute_start, number, optional


def pairs(payload: Any) -> list[Mapping[str, Any]]:
    found = payload.get("pairs") if isinstance(payload, Mapping) else payload
    if not isinstance(found, list) or not all(isinstance(p, Mapping) for p in found):
        raise FeedError("not a DexScreener pairs response (pairs: [...])")
    return found


def _token(pair: Mapping[str, Any]) -> str:
    base = pair.get("baseToken")
    address = base.get("address") if isinstance(base, Mapping) else None
    if not isinstance(address, str) or not address:
        raise FeedError("DexScreener pair without baseToken.address")
    return address


def _extras(pair: Mapping[str, Any]) -> dict[str, float | None]:
    liquidity = pair.get("liquidity") if isinstance(pair.get("liquidity"), Mapping) else {}
    m5 = (pair.get("txns") or {}).get("m5") if isinstance(pair.get("txns"), Mapping) else None
    cap = pair.get("marketCap") if pair.get("marketCap") is not None else pair.get("fdv")
    buys = optional(m5.get("buys"), "txns.m5.buys") if isinstance(m5, Mapping) else None
    sells = optional(m5.get("sells"), "txns.m5.sells") if isinstance(m5, Mapping) else None
    return {
        "liquidity": optional(liquidity.get("usd"), "liquidity.usd"),  # type: ignore[union-attr]
        "buys": None if buys is None else buys / 5.0,
        "sells": None if sells is None else sells / 5.0,
        "market_cap": optional(cap, "marketCap"),
    }


def most_liquid(payload: Any) -> dict[str, Mapping[str, Any]]:
    """Each base token's most liquid pair (a token often trades in several pools)."""
    best: dict[str, Mapping[str, Any]] = {}
    for p in pairs(payload):
        t = _token(p)
        liq = _extras(p)["liquidity"] or 0.0
        if t not in best or liq > (_extras(best[t])["liquidity"] or 0.0):
            best[t] = p
    return best


def enrich(ticks: list[FeedTick], payload: Any) -> list[FeedTick]:
    """``ticks`` with the snapshot's liquidity, buys/sells and market cap filled in for their tokens (by
    base token address; the most liquid pair where a token has several). Only fields a tick lacks are
    filled: what the bar's own source measured (a trade feed's exact counts) is never overwritten."""
    best = most_liquid(payload)
    out = []
    for tick in ticks:
        pair = best.get(tick.token)
        if pair is None:
            out.append(tick)
            continue
        extras = {k: v for k, v in _extras(pair).items() if v is not None and getattr(tick, k) is None}
        out.append(msgspec.structs.replace(tick, **extras))
    return out


def snapshot_ticks(payload: Any, now: float) -> list[FeedTick]:
    """Each token's price (its most liquid pair's) as a flat tick of the current minute (volume 0: a
    snapshot has no bar volume), with the snapshot's extras: for tokens no candle source covers."""
    out = []
    for p in most_liquid(payload).values():
        price = number(p.get("priceUsd"), "priceUsd")
        extras = _extras(p)
        out.append(FeedTick(_token(p), minute_start(now), price, price, price, price, 0.0, **extras))
    return out
