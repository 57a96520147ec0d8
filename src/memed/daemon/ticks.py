"""Ticks at the edge: decode, validate, count every rejection by reason.

A message holds one tick (a JSON object) or a JSON array of ticks. A tick::

    {"token": "PEPE", "ts": 1767225600, "close": 0.0012,
     "open": ..., "high": ..., "low": ..., "volume": ...,            # optional, default close / 0
     "liquidity": ..., "buys": ..., "sells": ..., "market_cap": ...}  # optional, absent = unknown

``ts`` is the bar's minute in epoch seconds (or milliseconds, or an ISO 8601 string); it is floored to
the minute. Rejection reasons: ``too_large`` (a message over ``max_bytes``), ``malformed_json`` (not
JSON, or nested deeper than the decoder allows), ``not_a_tick``, ``missing_field``, ``unknown_field``,
``bad_type`` (a field of the wrong JSON type), ``bad_token``, ``bad_ts``, ``future_ts``; then the one bar
rule of :mod:`memed.data.bars`, the loaders' too: ``bad_price``, ``high_below_low``,
``price_outside_range``, ``bad_volume``, ``bad_optional``.

A token becomes part of MQTT topics (``memed/signals/<token>``), so it must be a valid, harmless topic
level: 1 to ``MAX_TOKEN_BYTES`` bytes of UTF-8 without control characters (C0, DEL, C1: NUL and TAB
included), Unicode non-characters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF), surrogates, or the topic
separators and wildcards ``/``, ``+`` and ``#``. Mosquitto drops a connection that publishes to a topic
holding some of these, and paho refuses others; such a token is rejected as ``bad_token`` instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from memed.data.bars import BAR_FIELDS, BAR_PROBLEMS, BAR_REASONS, OPTIONAL_FIELDS, bar_verdicts

KNOWN = frozenset(("token", "ts", *BAR_FIELDS))
MAX_TOKEN_BYTES = 200
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Default size limit of one tick message (``daemon.max_message_bytes``)."""
_NONCHARACTERS = "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)
)
_BAD_TOKEN = re.compile(f"[\x00-\x1f\x7f-\x9f#+/\ufdd0-\ufdef\ud800-\udfff{_NONCHARACTERS}]")
MS_ABOVE = 1e11
"""A numeric ``ts`` above this is in milliseconds (1e11 s is the year 5138)."""
_decoder = msgspec.json.Decoder()


class Tick(msgspec.Struct, frozen=True):
    """One accepted tick (a msgspec struct: built for every tick, at a tenth of a frozen dataclass's
    cost; encoded as the same map of fields in checkpoints and snapshots)."""

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
        """The bar's fields in :data:`~memed.data.bars.BAR_FIELDS` order."""
        return (self.open, self.high, self.low, self.close, self.volume,
                self.liquidity, self.buys, self.sells, self.market_cap)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str
    raw: Any


def _number(value: Any) -> float | None:
    """A JSON number as float (an integer too large for one is infinite); None for any other type."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _ts_minute(value: Any) -> int | None:  # noqa: PLR0911 - one return per rejected form
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = _number(value)
        if number is None or not math.isfinite(number) or number <= 0:
            return None
        seconds = number / 1000.0 if number > MS_ABOVE else number
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


def token_problem(token: str) -> str:
    """Why ``token`` cannot be a token ('' when it can): see the module docstring."""
    if not token:
        return "token is empty"
    bad = _BAD_TOKEN.search(token)
    if bad:
        return f"token holds {bad.group()!a} (control, non-character, surrogate, /, + or #)"
    if len(token.encode("utf-8")) > MAX_TOKEN_BYTES:
        return f"token is longer than {MAX_TOKEN_BYTES} bytes"
    return ""


def parse_tick(  # noqa: PLR0911, PLR0912 - one return per rejection reason
    obj: Any, now_seconds: float, max_future_seconds: float, strict: bool
) -> Tick | Rejected:
    """One JSON value as a tick, or why it is not one; whether the bar is valid is for
    :func:`decode_message` (the one bar rule, over every tick of a message at once)."""
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
    if not isinstance(token, str):
        return Rejected("bad_type", "token must be a string", obj)
    problem = token_problem(token)
    if problem:
        return Rejected("bad_token", problem, obj)
    minute = _ts_minute(obj["ts"])
    if minute is None:
        return Rejected("bad_ts", f"ts {obj['ts']!r} is not epoch seconds/ms or an ISO time with zone", obj)
    if minute * 60 > now_seconds + max_future_seconds:
        return Rejected("future_ts", f"ts {obj['ts']!r} is in the future", obj)
    values: dict[str, float | None] = {}
    for field in BAR_FIELDS:
        raw = obj.get(field)
        if raw is None:  # absent: open/high/low default to close, volume to 0, the rest unknown
            values[field] = None
            continue
        value = _number(raw)
        if value is None:
            return Rejected("bad_type", f"{field} must be a number", obj)
        values[field] = value
    close = values["close"]
    if close is None:
        return Rejected("bad_type", "close must be a number", obj)
    o, h, lo = (_or(values[f], close) for f in ("open", "high", "low"))
    extra = [_or(values[f], math.nan) for f in OPTIONAL_FIELDS]
    return Tick(token, minute, o, h, lo, close, _or(values["volume"], 0.0), *extra)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def decode_message(payload: bytes, now_seconds: float, max_future_seconds: float, strict: bool = True,
                   max_bytes: int = MAX_MESSAGE_BYTES) -> list[Tick | Rejected]:  # fmt: skip
    """Every tick of one MQTT message, each valid or rejected with its reason."""
    if len(payload) > max_bytes:
        return [
            Rejected("too_large", f"{len(payload):,} bytes, over the {max_bytes:,}-byte limit", payload[:200])
        ]
    try:
        doc = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        return [Rejected("malformed_json", str(exc)[:200], payload[:200])]
    except RecursionError:
        return [Rejected("malformed_json", "JSON nested too deeply", payload[:200])]
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        return [Rejected("not_a_tick", "empty array", doc)]
    out = [parse_tick(item, now_seconds, max_future_seconds, strict) for item in items]
    parsed = [k for k, t in enumerate(out) if isinstance(t, Tick)]
    if parsed:
        bars = np.array([t.row() for t in out if isinstance(t, Tick)], dtype=np.float64).T
        for k, code in zip(parsed, bar_verdicts(bars).tolist(), strict=True):
            if code:
                out[k] = Rejected(BAR_REASONS[code], BAR_PROBLEMS[code], items[k])
    return out
