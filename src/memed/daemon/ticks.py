"""Ticks at the edge: decode, validate, count every rejection by reason.

A message holds one tick (a JSON object) or a JSON array of ticks. A tick::

    {"token": "PEPE", "ts": 1767225600, "close": 0.0012,
     "open": ..., "high": ..., "low": ..., "volume": ...,            # optional, default close / 0
     "liquidity": ..., "buys": ..., "sells": ..., "market_cap": ...}  # optional, absent = unknown

``ts`` is the bar's minute in epoch seconds (or milliseconds, or an ISO 8601 string); it is floored to
the minute. Rejection reasons: ``malformed_json``, ``not_a_tick``, ``missing_field``, ``unknown_field``,
``bad_type``, ``bad_price``, ``bad_volume``, ``bad_ts``, ``future_ts``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

OPTIONAL = ("liquidity", "buys", "sells", "market_cap")
KNOWN = frozenset(("token", "ts", "open", "high", "low", "close", "volume", *OPTIONAL))
_decoder = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Tick:
    token: str
    minute: int  # epoch minutes
    open: float
    high: float
    low: float
    close: float
    volume: float
    liquidity: float
    buys: float
    sells: float
    market_cap: float

    def row(self) -> tuple[float, ...]:
        return (self.open, self.high, self.low, self.close, self.volume,
                self.liquidity, self.buys, self.sells, self.market_cap)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str
    raw: Any


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _ts_minute(value: Any) -> int | None:  # noqa: PLR0911 - one return per rejected form
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            return None
        seconds = value / 1000.0 if value > 1e11 else float(value)
        return int(seconds // 60)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        return int(dt.timestamp() // 60)
    return None


def parse_tick(  # noqa: PLR0911 - one return per rejection reason
    obj: Any, now_seconds: float, max_future_seconds: float, strict: bool
) -> Tick | Rejected:
    if not isinstance(obj, dict):
        return Rejected("not_a_tick", f"expected an object, got {type(obj).__name__}", obj)
    for field in ("token", "ts", "close"):
        if field not in obj:
            return Rejected("missing_field", f"missing {field!r}", obj)
    if strict:
        unknown = obj.keys() - KNOWN
        if unknown:
            return Rejected("unknown_field", f"unknown field(s) {sorted(unknown)}", obj)
    token = obj["token"]
    if not isinstance(token, str) or not token or len(token) > 200 or "/" in token or "+" in token:
        return Rejected("bad_type", "token must be a non-empty string without / or +", obj)
    minute = _ts_minute(obj["ts"])
    if minute is None:
        return Rejected("bad_ts", f"ts {obj['ts']!r} is not epoch seconds/ms or an ISO time with zone", obj)
    if minute * 60 > now_seconds + max_future_seconds:
        return Rejected("future_ts", f"ts {obj['ts']!r} is in the future", obj)
    prices = {}
    close = _number(obj["close"])
    for field in ("open", "high", "low"):
        raw = obj.get(field, close)
        prices[field] = _number(raw) if raw is not None else close
    for field, value in (("close", close), *prices.items()):
        if value is None:
            return Rejected("bad_type", f"{field} must be a number", obj)
        if not math.isfinite(value) or value <= 0:
            return Rejected("bad_price", f"{field} = {value} is not a positive finite price", obj)
    assert close is not None
    o, h, lo = prices["open"], prices["high"], prices["low"]
    assert o is not None
    assert h is not None
    assert lo is not None
    if h < max(o, close, lo) or lo > min(o, close):
        return Rejected("bad_price", "high/low do not bound open and close", obj)
    volume = _number(obj.get("volume", 0.0))
    if volume is None or not math.isfinite(volume) or volume < 0:
        return Rejected("bad_volume", "volume must be a finite number >= 0", obj)
    extra = []
    for field in OPTIONAL:
        raw = obj.get(field)
        if raw is None:
            extra.append(math.nan)
            continue
        value = _number(raw)
        if value is None or not math.isfinite(value) or value < 0:
            return Rejected("bad_type", f"{field} must be a finite number >= 0", obj)
        extra.append(value)
    return Tick(token, minute, o, h, lo, close, volume, *extra)


def decode_message(payload: bytes, now_seconds: float, max_future_seconds: float, strict: bool = True
                   ) -> list[Tick | Rejected]:  # fmt: skip
    """Every tick of one MQTT message, each valid or rejected with its reason."""
    try:
        doc = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        return [Rejected("malformed_json", str(exc), payload[:200])]
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        return [Rejected("not_a_tick", "empty array", doc)]
    return [parse_tick(item, now_seconds, max_future_seconds, strict) for item in items]


def encode_ticks(ticks: list[dict[str, Any]]) -> bytes:
    return msgspec.json.encode(ticks)
