"""The tick every adapter produces: memed's wire shape (see the README's tick schema)."""

from __future__ import annotations

import math
from typing import Any

import msgspec


class FeedTick(msgspec.Struct, frozen=True, omit_defaults=True):
    """One bar for one token; optional fields left out when the source has no value."""

    token: str
    ts: int
    """The bar's open time, epoch seconds (a multiple of 60)."""
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    liquidity: float | None = None
    buys: float | None = None
    sells: float | None = None
    market_cap: float | None = None


class FeedError(ValueError):
    """A payload that is not the source's documented shape (the caller counts and logs it)."""


def number(value: Any, what: str) -> float:
    """A number from a JSON number or a numeric string (Binance and DexScreener send strings)."""
    if isinstance(value, bool):
        raise FeedError(f"{what}: {value!r} is not a number")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise FeedError(f"{what}: {value!r} is not a number") from None
    if not math.isfinite(out):
        raise FeedError(f"{what}: {value!r} is not finite")
    return out


def optional(value: Any, what: str) -> float | None:
    return None if value is None else number(value, what)


def minute_start(seconds: float) -> int:
    return int(seconds // 60) * 60


def encode(ticks: list[FeedTick]) -> bytes:
    """One JSON array of ticks: the batched message ``memed run`` takes."""
    return msgspec.json.encode(ticks)
