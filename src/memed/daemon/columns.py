"""Columnar tick messages: the fast path for batched feeds.

A message that is one JSON object whose ``token`` is an array is a column batch, every field an array of
the same length (``ts`` in epoch seconds or milliseconds; the optional columns may be left out, and an
element may be ``null``, which counts as absent)::

    {"token": ["PEPE", "WIF"], "ts": [1767225600, 1767225600], "close": [0.0012, 2.31],
     "open": [...], "high": [...], "low": [...], "volume": [...], "liquidity": [...], ...}

msgspec decodes it straight into typed lists (no Python object per tick) and every rule of
:mod:`memed.daemon.ticks` is applied with array operations: ``bad_token`` (each distinct name checked
once), ``bad_ts``, ``future_ts``, then the one bar rule (:func:`~memed.data.bars.bar_verdicts`). A column
of the wrong type, columns of different lengths or an unknown column (in strict mode) reject the whole
message, once, with msgspec's own words; a bad row rejects that row only. Accepted ticks come out as a
(9, n) bar matrix with their tokens and minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np

from memed.daemon.ticks import MAX_MESSAGE_BYTES, MS_ABOVE, Rejected, Tick, decode_message, token_problem
from memed.data.bars import (
    BAR_FIELDS,
    BAR_PROBLEMS,
    BAR_REASONS,
    CLOSE,
    HIGH,
    LOW,
    OPEN,
    VOLUME,
    bar_verdicts,
)

_TOKEN_CACHE = 100_000
"""Distinct token names whose verdict is kept (the cache is cleared when it fills)."""


class _Columns(msgspec.Struct):
    token: list[str]
    ts: list[float]
    close: list[float | None]
    open: list[float | None] | None = None
    high: list[float | None] | None = None
    low: list[float | None] | None = None
    volume: list[float | None] | None = None
    liquidity: list[float | None] | None = None
    buys: list[float | None] | None = None
    sells: list[float | None] | None = None
    market_cap: list[float | None] | None = None


class _StrictColumns(_Columns, forbid_unknown_fields=True):
    pass


_LENIENT = msgspec.json.Decoder(_Columns)
_STRICT = msgspec.json.Decoder(_StrictColumns)


@dataclass
class ColumnTicks:
    """A column batch's accepted ticks, and its rejected rows."""

    tokens: list[str]
    minutes: np.ndarray  # int64 epoch minutes
    bars: np.ndarray  # (9, n) float64 in BAR_FIELDS order
    rejected: list[Rejected]

    def __len__(self) -> int:
        return len(self.tokens)

    def ticks(self) -> list[Tick]:
        """The accepted ticks one by one (the path of a batch the batcher cannot take whole)."""
        rows = zip(self.tokens, self.minutes.tolist(), self.bars.T.tolist(), strict=True)
        return [Tick(t, m, *row) for t, m, row in rows]


_verdicts: dict[str, str] = {}


def _token_problems(tokens: list[str]) -> list[str]:
    if len(_verdicts) > _TOKEN_CACHE:
        _verdicts.clear()
    out = []
    for t in tokens:
        got = _verdicts.get(t)
        if got is None:
            got = _verdicts[t] = token_problem(t)
        out.append(got)
    return out


def is_columnar(payload: bytes) -> bool:
    """Whether ``payload`` looks like a column batch (an object, ``"token"`` followed by an array)."""
    head = payload[:4096].lstrip()
    if not head.startswith(b"{"):
        return False
    at = head.find(b'"token"')
    return at >= 0 and head[at + 7 :].lstrip().lstrip(b":").lstrip().startswith(b"[")


def decode_columns(payload: bytes, now_seconds: float, max_future_seconds: float, strict: bool = True
                   ) -> ColumnTicks | Rejected:  # fmt: skip
    """A column batch's ticks, validated; or why the whole message is refused."""
    try:
        doc: _Columns = (_STRICT if strict else _LENIENT).decode(payload)
    except msgspec.ValidationError as exc:
        reason = "unknown_field" if "unknown field" in str(exc) else "bad_type"
        return Rejected(reason, f"column batch: {exc}"[:200], payload[:200])
    except msgspec.DecodeError as exc:
        return Rejected("malformed_json", str(exc)[:200], payload[:200])
    n = len(doc.token)
    lengths = {f: len(v) for f in ("ts", *BAR_FIELDS) if (v := getattr(doc, f)) is not None}
    if n == 0 or any(m != n for m in lengths.values()):
        return Rejected("not_a_tick", f"column batch: {n} tokens, column lengths {lengths}", payload[:200])
    bars = np.empty((len(BAR_FIELDS), n))
    for k, f in enumerate(BAR_FIELDS):
        col = getattr(doc, f)
        bars[k] = np.nan if col is None else np.array(col, dtype=np.float64)  # null: NaN
    close = bars[CLOSE]
    for k in (OPEN, HIGH, LOW):  # absent: the close
        bars[k] = np.where(np.isnan(bars[k]), close, bars[k])
    bars[VOLUME] = np.where(np.isnan(bars[VOLUME]), 0.0, bars[VOLUME])
    ts = np.array(doc.ts, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        seconds = np.where(ts > MS_ABOVE, ts / 1000.0, ts)
        bad_ts = ~np.isfinite(ts) | (ts <= 0)
        minutes = np.floor(np.where(bad_ts, 0.0, seconds) / 60.0).astype(np.int64)  # bad: 0, unused
    future = ~bad_ts & (minutes * 60 > now_seconds + max_future_seconds)
    codes = bar_verdicts(bars)
    problems = _token_problems(doc.token)
    bad = bad_ts | future | (codes != 0) | np.array([p != "" for p in problems], dtype=np.bool_)
    rejected = [_rejected(doc, i, problems[i], bool(bad_ts[i]), bool(future[i]), int(codes[i]))
                for i in np.flatnonzero(bad).tolist()]  # fmt: skip
    if rejected:
        keep = ~bad
        tokens = [t for t, k in zip(doc.token, keep.tolist(), strict=True) if k]
        return ColumnTicks(tokens, minutes[keep], np.ascontiguousarray(bars[:, keep]), rejected)
    return ColumnTicks(doc.token, minutes, bars, [])


def _rejected(doc: _Columns, i: int, token_problem: str, bad_ts: bool, future: bool, code: int) -> Rejected:
    """Row ``i``'s rejection, under its first failing rule (the row-form parser's order)."""
    raw = {"token": doc.token[i], "ts": doc.ts[i], "close": doc.close[i]}
    if token_problem:
        return Rejected("bad_token", token_problem, raw)
    if bad_ts:
        return Rejected("bad_ts", f"ts {doc.ts[i]!r} is not epoch seconds/ms", raw)
    if future:
        return Rejected("future_ts", f"ts {doc.ts[i]!r} is in the future", raw)
    return Rejected(BAR_REASONS[code], BAR_PROBLEMS[code], raw)


def decode_any(payload: bytes, now_seconds: float, max_future_seconds: float, strict: bool = True,
               max_bytes: int = MAX_MESSAGE_BYTES) -> ColumnTicks | list[Tick | Rejected]:  # fmt: skip
    """Any tick message: a column batch as :class:`ColumnTicks` (through :func:`decode_columns`; a batch
    refused whole as its one rejection), one tick or an array of ticks as ticks and rejections (through
    :func:`~memed.daemon.ticks.decode_message`)."""
    if len(payload) > max_bytes or not is_columnar(payload):
        return decode_message(payload, now_seconds, max_future_seconds, strict, max_bytes)
    got = decode_columns(payload, now_seconds, max_future_seconds, strict)
    return [got] if isinstance(got, Rejected) else got


def decode_payload(payload: bytes, now_seconds: float, max_future_seconds: float, strict: bool = True,
                   max_bytes: int = MAX_MESSAGE_BYTES) -> list[Tick | Rejected]:  # fmt: skip
    """Any tick message as the daemon's ticks and rejections (:func:`decode_any`, one tick at a time)."""
    got = decode_any(payload, now_seconds, max_future_seconds, strict, max_bytes)
    return [*got.rejected, *got.ticks()] if isinstance(got, ColumnTicks) else got
