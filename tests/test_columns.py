"""Column batches (the fast path for batched feeds): exactly the ticks and the rejections the row form
gives for the same ticks, whole-message refusals with one clear reason, and a daemon fed column batches
over Mosquitto serving what the direct decision path decides."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from broker import Mosquitto
from daemon_helpers import (
    assert_same_signals,
    collect,
    daemon_config,
    direct_signals,
    read_jsonl,
    serve_market,
    wait_until,
    waited,
)
from memed.daemon.app import Daemon
from memed.daemon.batcher import Batch, MinuteBatcher
from memed.daemon.columns import ColumnTicks, decode_columns, decode_payload, is_columnar
from memed.daemon.ticks import Rejected, Tick, decode_message
from memed.data import synth_market
from memed.data.bars import BAR_FIELDS

NOW = 1_767_225_600.0


def corpus() -> list[dict[str, Any]]:
    """Valid ticks and one of every row-level fault, with optional fields present, absent and null."""
    ok = {"ts": NOW - 60, "close": 1.5, "open": 1.4, "high": 1.9, "low": 1.3, "volume": 10.0}
    rows: list[dict[str, Any]] = [{"token": f"T{i}", **ok, "close": 1.5 + i / 100} for i in range(20)]
    rows += [
        {"token": "MS", **ok, "ts": (NOW - 60) * 1000},  # milliseconds
        {"token": "LIQ", **ok, "liquidity": 5e4, "buys": None, "sells": 3.0},  # a null optional field
        {"token": "BARE", "ts": NOW - 60, "close": 2.0},  # open/high/low default to close, volume to 0
        {"token": "a/b", **ok},  # bad_token
        {"token": "", **ok},  # bad_token
        {"token": "ZERO", **ok, "ts": 0},  # bad_ts
        {"token": "FUT", **ok, "ts": NOW + 3600},  # future_ts
        {"token": "HL", **ok, "high": 1.0, "low": 2.0},  # high_below_low
        {"token": "OUT", **ok, "close": 9.0},  # price_outside_range
        {"token": "NEG", **ok, "volume": -1.0},  # bad_volume
        {"token": "TINY", **ok, "close": 1e-30, "open": 1e-30, "low": 1e-30},  # bad_price
        {"token": "BIG", **ok, "liquidity": 1e30},  # bad_optional
        {"token": "NULLC", **ok, "close": None},  # close null: not a price
    ]
    return rows


def as_columns(rows: list[dict[str, Any]]) -> bytes:
    keys = ["token", "ts", "close", "open", "high", "low", "volume", "liquidity", "buys", "sells"]
    return msgspec.json.encode({k: [r.get(k) for r in rows] for k in keys})


def test_a_column_batch_gives_what_the_row_form_gives() -> None:
    rows = corpus()
    columnar = as_columns(rows)
    assert is_columnar(columnar)
    assert not is_columnar(msgspec.json.encode(rows))
    assert not is_columnar(msgspec.json.encode(rows[0]))
    got = decode_payload(columnar, NOW, 120.0)
    # the row form cannot carry a null close as "absent": it says bad_type; the column form, bad_price
    want = decode_message(msgspec.json.encode([r for r in rows if r["token"] != "NULLC"]), NOW, 120.0)
    got_ticks = [t for t in got if isinstance(t, Tick)]
    want_ticks = [t for t in want if isinstance(t, Tick)]
    assert [repr(t) for t in got_ticks] == [repr(t) for t in want_ticks]  # every field; NaN where absent
    assert len(got_ticks) == 23
    bare = next(t for t in got_ticks if t.token == "BARE")
    assert (bare.open, bare.high, bare.low, bare.volume) == (2.0, 2.0, 2.0, 0.0)
    assert math.isnan(next(t for t in got_ticks if t.token == "LIQ").buys)
    got_reasons = Counter(r.reason for r in got if isinstance(r, Rejected))
    want_reasons = Counter(r.reason for r in want if isinstance(r, Rejected))
    assert got_reasons == want_reasons + Counter({"bad_price": 1})
    assert set(got_reasons) == {"bad_token", "bad_ts", "future_ts", "high_below_low", "price_outside_range",
                                "bad_volume", "bad_price", "bad_optional"}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"token": ["A", "B"], "ts": [NOW], "close": [1.0, 2.0]}, "not_a_tick"),  # lengths differ
        ({"token": [], "ts": [], "close": []}, "not_a_tick"),
        ({"token": ["A"], "ts": [NOW], "close": ["1.0"]}, "bad_type"),
        ({"token": ["A"], "ts": ["2026-01-01T00:00:00Z"], "close": [1.0]}, "bad_type"),  # seconds or ms
        ({"token": ["A"], "ts": [NOW], "close": [1.0], "colour": ["red"]}, "unknown_field"),
        ({"token": ["A"], "close": [1.0]}, "bad_type"),  # ts missing
    ],
)
def test_a_bad_column_batch_is_refused_whole_with_one_reason(body: dict[str, Any], reason: str) -> None:
    got = decode_columns(msgspec.json.encode(body), NOW, 120.0)
    assert isinstance(got, Rejected)
    assert got.reason == reason
    assert len(decode_payload(msgspec.json.encode(body), NOW, 120.0)) == 1
    if reason == "unknown_field":  # lenient mode takes the known columns
        lenient = decode_columns(msgspec.json.encode(body), NOW, 120.0, strict=False)
        assert not isinstance(lenient, Rejected)
        assert lenient.tokens == ["A"]


def _batch_rows(body: bytes, fmt: str) -> list[dict[str, Any]]:
    """A batch message's signals as the consumer reads them: the JSON array, or the Arrow file through
    pyarrow (not polars, which wrote it)."""
    if fmt == "json":
        rows: list[dict[str, Any]] = msgspec.json.decode(body)
        return rows
    return pa_ipc.open_file(pa.py_buffer(body)).read_all().to_pylist()


@pytest.mark.broker
@pytest.mark.parametrize("fmt", ["json", "arrow"])
async def test_a_daemon_fed_column_batches_serves_the_direct_path(
    fmt: str, tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Column batches in; out, the per-token topics off and every minute's signals in one message (a
    JSON array, or an Arrow file), equal to the direct path's."""
    market = synth_market(5, 300, seed=9).with_columns(liquidity=pl.lit(1e5))
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path, policy="bands")
    d = msgspec.structs.replace(cfg.daemon, signal_topic_prefix="", signal_batch_topic="memed/all",
                                signal_batch_format=fmt)  # fmt: skip
    cfg = msgspec.structs.replace(cfg, daemon=d)
    batches: list[bytes] = []
    per_token: list[bytes] = []
    ready, ready2 = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        sub = tg.create_task(collect(mosquitto.port, "memed/all", batches, ready))
        sub2 = tg.create_task(collect(mosquitto.port, "memed/signals/#", per_token, ready2))
        await waited(ready, "the test's subscriber")
        await waited(ready2, "the test's subscriber")
        daemon = Daemon(cfg)
        await serve_market(daemon, market, mosquitto.url, columns=True)
        want = direct_signals(market, cfg, tiny_registry)
        await wait_until(lambda: sum(len(_batch_rows(b, fmt)) for b in batches) >= len(want))
        sub.cancel()
        sub2.cancel()
    assert_same_signals(read_jsonl(Path(cfg.daemon.jsonl_path)), want)
    got = {(d["token"], d["ts"]): d for b in batches for d in _batch_rows(b, fmt)}
    assert_same_signals(got, want)
    assert len(batches) == len({k[1] for k in want})  # one message a minute
    assert per_token == []
    assert len(daemon.recent_latencies) > 0  # the batch topic is the latency reference


def _same_batches(a: list[Batch], b: list[Batch]) -> None:
    assert [(x.minute, x.tokens, x.last_arrival) for x in a] == [
        (x.minute, x.tokens, x.last_arrival) for x in b
    ]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.bars, y.bars, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.sampled_from(["A", "B", "C", "D", "E", "F"]), min_size=1, max_size=6, unique=True),
            st.one_of(  # minute offsets, cycled over the tokens: mostly one minute a message (a feed's)
                st.integers(0, 3).map(lambda k: [k]), st.lists(st.integers(0, 3), min_size=1, max_size=6)
            ),
            st.floats(1.0, 2.0),  # close
            st.floats(0.0, 3.0),  # seconds until the next message
            st.booleans(),  # look for closed minutes after it
            st.booleans(),  # the message names its first token twice
        ),
        min_size=1,
        max_size=25,
    ),
    ahead=st.sampled_from([None, 1, 2]),
    expected=st.booleans(),
)
def test_a_column_batch_taken_whole_batches_as_its_ticks_one_by_one(
    steps: list[tuple[list[str], list[int], float, float, bool, bool]], ahead: int | None, expected: bool
) -> None:
    """The batcher takes a column batch whole only where that is exactly what adding its ticks one by
    one does: the same batches (tokens, order, bars, arrival), counts and state, whatever the mix of
    minutes, repeated tokens, late, out-of-order and far-ahead ticks."""
    whole, single = (MinuteBatcher(2.0, close_on_expected=expected, max_ahead=ahead) for _ in range(2))
    now, base, taken = 29_000_000 * 60.0, 29_000_000, 0
    for names, offsets, close, pause, look, twice in steps:
        tokens = [*names, names[0]] if twice else names
        minutes = np.array([base + offsets[i % len(offsets)] for i in range(len(tokens))], np.int64)
        bars = np.full((len(BAR_FIELDS), len(tokens)), np.nan)
        bars[:4] = close + np.arange(len(tokens)) / 100
        bars[4] = 1.0
        ticks = ColumnTicks(tokens, minutes, bars, []).ticks()
        if whole.add_columns(tokens, minutes, bars, now):
            taken += 1
        else:
            for t in ticks:
                whole.add(t, now)
        for t in ticks:
            single.add(t, now)
        now += pause
        if look:
            _same_batches(whole.due(now), single.due(now))
        # the state a checkpoint keeps, byte for byte (msgpack: an absent field's NaN compares as bytes)
        assert msgspec.msgpack.encode(whole.state()) == msgspec.msgpack.encode(single.state())
        if offsets[0] == 3:  # the feed moves on
            base += 1
    _same_batches(whole.due(now, flush=True), single.due(now, flush=True))
    assert whole.counts == single.counts
    event(f"batches taken whole: {'none' if not taken else 'some'}")


def test_a_column_batch_sent_twice_is_counted_duplicate_tick_by_tick() -> None:
    """A resend is a duplicate however it came — absent fields (NaN) equal absent ones (a column batch's
    resend used to count as `replaced`: its NaNs were new objects); a changed bar is `replaced`."""
    b = MinuteBatcher(2.0)
    m = 29_000_000
    bars = np.full((len(BAR_FIELDS), 3), np.nan)
    bars[:4], bars[4] = [[1.0, 2.0, 3.0]] * 4, 0.0
    got = ColumnTicks(["A", "B", "C"], np.full(3, m), bars, [])
    assert b.add_columns(got.tokens, got.minutes, got.bars.copy(), 0.0)
    assert not b.add_columns(got.tokens, got.minutes, got.bars.copy(), 0.0)  # all already in the minute
    assert [b.add(t, 0.0) for t in got.ticks()] == ["duplicate"] * 3
    changed = msgspec.structs.replace(got.ticks()[1], close=2.5)
    assert b.add(changed, 0.0) is None
    assert b.counts == {"duplicate": 3, "replaced": 1}
    (batch,) = b.due(0.0, flush=True)
    assert batch.tokens == ["A", "B", "C"]
    assert batch.bars[3].tolist() == [1.0, 2.5, 3.0]
