"""One bar rule: the daemon's tick parser and the loaders judge the same bars alike, for the same reason,
and every array of bars is addressed by the named indices of memed.data.bars."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pytest

from memed.daemon.ticks import Rejected, Tick, decode_message
from memed.data.bars import BAR_FIELDS, BAR_REASONS, CLOSE, HIGH, LOW, OPEN, VOLUME, bar_verdicts
from memed.data.frames import bar_matrix
from memed.data.schema import REJECT_REASONS, validate_bars

TS = 1_767_225_540
GOOD = {"open": 1.4, "high": 1.6, "low": 1.3, "close": 1.5, "volume": 10.0}
CASES: list[tuple[dict[str, Any], str]] = [
    ({}, ""),
    ({"liquidity": 5e4, "buys": 3.0, "sells": 0.0, "market_cap": 1e6}, ""),
    ({"open": 1.3, "close": 1.6}, ""),  # on the range's edges
    ({"close": -1.5}, "bad_price"),
    ({"low": 0.0}, "bad_price"),
    ({"high": math.inf}, "bad_price"),
    ({"open": 1e-320, "low": 1e-320}, "bad_price"),  # subnormal: outside [1e-18, 1e15]
    ({"open": 1e-18, "low": 1e-18}, ""),  # the bounds themselves are valid
    ({"open": 1e15, "high": 1e15, "close": 1e15, "low": 1.3}, ""),
    ({"high": 2e15}, "bad_price"),
    ({"volume": 2e21}, "bad_volume"),
    ({"high": 1.2}, "high_below_low"),
    ({"close": 1.7}, "price_outside_range"),  # the drift the loaders used to let through
    ({"open": 1.25}, "price_outside_range"),
    ({"volume": -3.0}, "bad_volume"),
    ({"volume": math.inf}, "bad_volume"),
    ({"liquidity": -1.0}, "bad_optional"),
    ({"market_cap": math.inf}, "bad_optional"),
    ({"high": 1.2, "volume": -1.0}, "high_below_low"),  # the first failing reason counts
]


def _json(doc: Any) -> bytes:
    """JSON with infinities written as an integer too large for a float (JSON has no Infinity, and
    msgspec refuses 1e999)."""
    return json.dumps(doc).replace("Infinity", "1" + "0" * 400).encode()


def _tick_verdict(bar: dict[str, Any]) -> str:
    body = _json({"token": "PEPE", "ts": TS, **bar})
    (item,) = decode_message(body, TS + 60, 120)
    return "" if isinstance(item, Tick) else item.reason


def _loader_verdict(bar: dict[str, Any]) -> str:
    row = {"token": "PEPE", "ts": datetime.fromtimestamp(TS, UTC), **bar}
    frame, rejections = validate_bars(pl.DataFrame([row]))
    if frame.height:
        return ""
    (reason,) = rejections.as_dict()
    return reason


@pytest.mark.parametrize(("change", "reason"), CASES)
def test_ticks_and_loaders_give_the_same_verdict_and_reason(change: dict[str, Any], reason: str) -> None:
    bar = {**GOOD, **change}
    assert _tick_verdict(bar) == reason
    assert _loader_verdict(bar) == reason


def test_a_message_of_many_ticks_is_judged_tick_by_tick() -> None:
    ticks = [{"token": f"T{k}", "ts": TS, **GOOD, **change} for k, (change, _) in enumerate(CASES)]
    body = _json(ticks)
    got = [i.reason if isinstance(i, Rejected) else "" for i in decode_message(body, TS + 60, 120)]
    assert got == [reason for _, reason in CASES]
    frame = pl.DataFrame([{"token": t["token"], "ts": datetime.fromtimestamp(TS, UTC), **t} for t in ticks])
    kept, rejections = validate_bars(frame)
    want = {r: sum(1 for _, x in CASES if x == r) for r in BAR_REASONS if r}
    assert rejections.as_dict() == {r: n for r, n in want.items() if n}
    assert kept.height == sum(1 for _, r in CASES if r == "")
    assert list(REJECT_REASONS) == ["missing_token_or_ts", *BAR_REASONS[1:], "duplicate_ts"]


def test_bar_arrays_are_in_the_named_field_order() -> None:
    assert (BAR_FIELDS[OPEN], BAR_FIELDS[CLOSE], BAR_FIELDS[VOLUME]) == ("open", "close", "volume")
    frame = pl.DataFrame([{"token": "A", "ts": datetime.fromtimestamp(TS, UTC), **GOOD}])
    x = bar_matrix(frame)
    assert x.shape == (len(BAR_FIELDS), 1)
    assert (x[OPEN, 0], x[HIGH, 0], x[LOW, 0], x[CLOSE, 0]) == (1.4, 1.6, 1.3, 1.5)
    assert np.isnan(x[len(GOOD) :, 0]).all()  # absent optional fields are NaN
    (tick,) = decode_message(msgspec.json.encode({"token": "A", "ts": TS, **GOOD}), TS + 60, 120)
    assert isinstance(tick, Tick)
    assert np.array_equal(np.array(tick.row()), x[:, 0], equal_nan=True)
    assert bar_verdicts(x).tolist() == [0]
    with pytest.raises(ValueError, match="matrix"):
        bar_verdicts(np.zeros((5, 2)))
