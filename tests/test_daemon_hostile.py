"""Hostile input cannot stop or silence the daemon: every message is counted by reason, topic-unsafe
tokens never reach a publish, and a minute that raises is contained."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import numpy as np
import polars as pl
import pytest

from broker import Mosquitto
from daemon_helpers import (
    assert_same_signals,
    collect,
    daemon_config,
    direct_signals,
    flat_tick,
    last_minute,
    read_jsonl,
    serve_market,
    signal_minute,
    wait_until,
    waited,
)
from memed.daemon.app import DEAD_LETTER_BYTES, Daemon, RateLimit, dead_letter
from memed.daemon.publish_dataset import publish_dataset
from memed.daemon.ticks import MAX_TOKEN_BYTES, Rejected, decode_message
from memed.data import synth_market
from memed.data.bars import bar_verdicts

NOW = 1_767_225_600.0
TS = 1_767_225_540


def _tick(**over: object) -> bytes:
    return json.dumps({"token": "PEPE", "ts": TS, "close": 1.0} | over).encode()


POISON: list[tuple[str, bytes, str]] = [
    ("hash token", _tick(token="A#B"), "bad_token"),
    ("plus token", _tick(token="A+B"), "bad_token"),
    ("slash token", _tick(token="a/b"), "bad_token"),
    ("NUL token", _tick(token="A\x00B"), "bad_token"),
    ("TAB token", _tick(token="A\tB"), "bad_token"),
    ("DEL token", _tick(token="A\x7fB"), "bad_token"),
    ("C1 token", _tick(token="A\x85B"), "bad_token"),
    ("U+FFFF token", _tick(token="A\uffffB"), "bad_token"),
    ("U+FDD0 token", _tick(token="A\ufdd0B"), "bad_token"),
    ("U+10FFFF token", _tick(token="A\U0010ffffB"), "bad_token"),
    ("lone surrogate", b'{"token":"A\\ud800B","ts":1767225540,"close":1.0}', "malformed_json"),
    ("empty token", _tick(token=""), "bad_token"),
    ("long token", _tick(token="é" * (MAX_TOKEN_BYTES // 2 + 1)), "bad_token"),
    ("400-digit close", b'{"token":"A","ts":1767225540,"close":' + b"9" * 400 + b"}", "bad_price"),
    ("400-digit ts", b'{"token":"A","ts":' + b"9" * 400 + b',"close":1.0}', "bad_ts"),
    (
        "400-digit volume",
        b'{"token":"A","ts":1767225540,"close":1.0,"volume":' + b"9" * 400 + b"}",
        "bad_volume",
    ),
    ("nested arrays", b"[" * 1000 + b"]" * 1000, "malformed_json"),
    ("nested objects", b'{"a":' * 1000 + b"1" + b"}" * 1000, "malformed_json"),
    ("subnormal close", _tick(close=5e-324), "bad_price"),
    ("tiny close", _tick(close=1e-30), "bad_price"),
    ("huge close", _tick(close=1e300), "bad_price"),
    ("huge volume", _tick(volume=1e300), "bad_volume"),
    ("huge liquidity", _tick(liquidity=1e300), "bad_optional"),
    ("too large", b"[" + b",".join([_tick()] * 200_000) + b"]", "too_large"),
]


@pytest.mark.parametrize(("name", "body", "reason"), POISON, ids=[p[0] for p in POISON])
def test_each_hostile_message_is_one_counted_rejection(name: str, body: bytes, reason: str) -> None:
    items = decode_message(body, NOW, 120)
    assert len(items) == 1, name
    assert isinstance(items[0], Rejected)
    assert items[0].reason == reason
    assert len(items[0].detail) <= 500
    letter = msgspec.json.decode(dead_letter(items[0]))
    assert letter["reason"] == reason
    assert len(dead_letter(items[0])) < DEAD_LETTER_BYTES + 1200  # a huge message gives a short letter


def test_tokens_that_are_fine_topic_levels_pass() -> None:
    for token in (
        "PEPE",
        "1000PEPE_USDT_USDT",
        "EKpQGSJtjMFqKZ9KQanSqYXRcF8fBopzLHYxdM65zcjm",
        "猫-coin",
        "é" * 100,
    ):
        (item,) = decode_message(_tick(token=token), NOW, 120)
        assert not isinstance(item, Rejected), token


def test_the_bar_rule_bounds_prices_and_volumes() -> None:
    nan = np.nan
    cases = ((1e-18, 0.0), (1e15, 1e21), (9e-19, 1.0), (2e15, 1.0), (1.0, 2e21))
    bars = np.array([[p, p, p, p, v, nan, nan, nan, nan] for p, v in cases]).T
    assert bar_verdicts(bars).tolist() == [0, 0, 1, 1, 4]


def test_rejection_logs_are_rate_limited_per_reason() -> None:
    limit = RateLimit(3, 60.0)
    assert [limit.allow("bad_ts", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert limit.allow("bad_price", 1.0)  # per reason
    assert limit.allow("bad_ts", 61.0)  # a new window


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    return synth_market(4, 420, seed=7)


@pytest.mark.broker
async def test_a_poisoned_feed_leaves_the_real_signals_unchanged(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path, market: pl.DataFrame
) -> None:
    """The poison corpus published before and amid a real feed: the daemon stays up, counts every message
    by reason, MQTT keeps delivering, and the real tokens' signals equal the direct decision path."""
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path, queue_minutes=100_000)
    daemon = Daemon(cfg)
    received: list[bytes] = []
    ready = asyncio.Event()
    poison = [body for _, body, _ in POISON if len(body) < 1_000_000]  # the broker's own limit aside
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        sub = tg.create_task(collect(mosquitto.port, "memed/signals/#", received, ready))
        await waited(daemon.subscribed, "the daemon to subscribe")
        await waited(ready, "the test's subscriber")
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            for body in poison:
                await client.publish("memed/ticks/x", body, qos=1)
        cut = market["ts"].min() + timedelta(minutes=200)  # type: ignore[operator]
        await publish_dataset(market.filter(pl.col("ts") < cut), mosquitto.url, batch=True)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            for body in poison:
                await client.publish("memed/ticks/x", body, qos=1)
        await publish_dataset(market.filter(pl.col("ts") >= cut), mosquitto.url, batch=True)
        last = last_minute(market)
        await wait_until(lambda: daemon.batcher.last_closed >= last, timeout=120)
        daemon.stop()
        await run
        sub.cancel()
    counts = daemon.metrics.rejected_counts()
    want: dict[str, float] = {}
    for _, body, reason in POISON:
        if len(body) < 1_000_000:
            want[reason] = want.get(reason, 0) + 2
    assert {k: v for k, v in counts.items() if k in want} == want
    assert daemon.metrics.minutes_failed._value.get() == 0  # type: ignore[attr-defined]
    assert received  # MQTT kept delivering
    assert_same_signals(read_jsonl(tmp_path / "signals.jsonl"), direct_signals(market, cfg, tiny_registry))


def poisoned(path: Any, culprits: set[str], from_minute: int) -> Any:
    """``path.process`` that raises, from ``from_minute`` on, for any batch holding a culprit, after the
    real call has advanced the state (the worst case: half-updated tokens)."""
    real = path.process

    def process(tokens: list[str], minute: float, bars: np.ndarray):  # type: ignore[no-untyped-def]
        out = real(tokens, minute, bars)
        if minute >= from_minute and culprits & set(tokens):
            raise ZeroDivisionError("injected")
        return out

    return process


def test_bisection_finds_the_tokens_that_make_a_minute_raise(tiny_registry: Path) -> None:
    from memed.config import MemedConfig
    from memed.daemon.quarantine import bisect_minute
    from memed.decision import DecisionPath
    from memed.models.registry import load_model_set

    cfg = MemedConfig()
    path = DecisionPath(load_model_set(tiny_registry), cfg.signals, cfg.risk)
    tokens = [f"T{i:03d}" for i in range(300)]
    bars = np.vstack([np.ones((5, 300)), np.full((4, 300), np.nan)])
    path.process(tokens, 100.0, bars)
    path.process = poisoned(path, {"T017", "T250"}, 101)  # type: ignore[method-assign]
    found = bisect_minute(path, tokens, 101.0, bars)
    assert sorted(found.culprits) == ["T017", "T250"]
    assert not found.exhausted
    assert found.runs <= 2 * 2 * 9 + 1  # two culprits among 300: about 2·log2(300) splits
    last = path.last_minutes(tokens)
    innocent = [t not in {"T017", "T250"} for t in tokens]
    assert np.all(last[innocent] == 101.0)  # they took the minute as their first bar after the reset
    assert np.isnan(last[~np.array(innocent)]).all()  # the culprits are forgotten
    # a fault that is every token's (the minute's, not a token's) quarantines nobody
    path.process = poisoned(path, set(tokens), 101)  # type: ignore[method-assign]
    nobody = bisect_minute(path, tokens[:8], 101.0, np.ascontiguousarray(bars[:, :8]))
    assert nobody.culprits == []
    assert not nobody.exhausted
    # more failing runs than the budget: it gives up and quarantines nobody
    many = bisect_minute(path, tokens, 101.0, bars, budget=10)
    assert many.exhausted
    assert many.culprits == []
    assert np.isnan(path.last_minutes(tokens)).all()


@pytest.mark.broker
async def test_a_minute_that_raises_is_contained(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path, market: pl.DataFrame
) -> None:
    """A fault injected into every minute holding one token, from one minute on: the minute is counted,
    the bisection quarantines that token (its later ticks are rejected), the others go on being served."""
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path, queue_minutes=100_000)
    daemon = Daemon(cfg)
    first = int(market["ts"].min().timestamp() // 60)  # type: ignore[union-attr]
    bad_minute = first + 100
    poison = sorted(market.filter(pl.col("ts").dt.epoch("s") // 60 == bad_minute)["token"].to_list())[0]
    daemon.path.process = poisoned(daemon.path, {poison}, bad_minute)  # type: ignore[method-assign]
    await serve_market(daemon, market, mosquitto.url)
    last = last_minute(market)
    assert daemon.metrics.minutes_failed._value.get() == 1  # type: ignore[attr-defined]
    assert daemon.quarantine.until == {poison: bad_minute + cfg.daemon.quarantine_minutes}
    later = market.filter((pl.col("token") == poison) & (pl.col("ts").dt.epoch("s") // 60 > bad_minute))
    assert daemon.metrics.rejected_counts()["quarantined"] == later.height > 0
    got = read_jsonl(tmp_path / "signals.jsonl")
    minutes = {signal_minute(ts) for _, ts in got}
    assert bad_minute not in minutes
    assert max(minutes) == last  # later minutes were served
    assert not [k for k in got if k[0] == poison and signal_minute(k[1]) > bad_minute]
    after = [d for (_, ts), d in got.items() if signal_minute(ts) == bad_minute + 1]
    assert after
    assert all(d["reason"] == "warming_up" for d in after)  # the others restarted from the bad minute


def test_one_token_stamped_ahead_cannot_close_a_minute_for_the_others() -> None:
    from memed.daemon.batcher import MinuteBatcher

    t0 = 13 * 60.0  # wall clock after the minutes below ended
    b = MinuteBatcher(wait_seconds=30.0)
    for t in ("A", "B", "C", "X"):
        b.add(flat_tick(t, 10), t0 + 0.0)
    assert [
        x.minute for x in b.due(t0 + 0.1)
    ] == []  # nothing expected yet: waits for the quorum or the timeout
    b.add(flat_tick("X", 12), t0 + 0.2)  # X runs two minutes ahead
    assert b.due(t0 + 0.3) == []  # one of four moved on: no quorum (more than half)
    b.add(flat_tick("A", 11), t0 + 0.4)
    assert b.due(t0 + 0.5) == []  # two of four: still no majority
    b.add(flat_tick("B", 11), t0 + 0.6)
    assert [x.minute for x in b.due(t0 + 0.7)] == [10]  # three of four: minute 10 closes
    b.add(flat_tick("C", 11), t0 + 0.8)
    assert b.due(t0 + 0.9) == []  # X never ticked at 11: not complete, and only X is past it
    b.add(flat_tick("A", 12), t0 + 1.0)
    b.add(flat_tick("B", 12), t0 + 1.0)
    assert [x.minute for x in b.due(t0 + 1.1)] == [11]  # A, B and X are past 11
    assert {t.token for t in b.due(t0 + 100.0)[0].ticks} == {"A", "B", "X"}  # 12 closes on its wait
    # live: a minute's wait never ends before the minute has ended on the wall clock, so a tick stamped
    # for the next minute cannot start that minute's wait early
    live = MinuteBatcher(wait_seconds=2.0)
    now = 100 * 60.0 + 10  # ten seconds into minute 100
    live.add(flat_tick("A", 99), now)
    live.add(flat_tick("B", 99), now)
    live.add(flat_tick("X", 101), now)  # 50 s ahead
    assert [x.minute for x in live.due(now + 5)] == [99]  # 99 ended long ago: its wait is over
    live.add(flat_tick("A", 100), 101 * 60.0 + 0.5)
    assert live.due(101 * 60.0 + 1.0) == []  # minute 100 ended 1 s ago, B has not ticked: waiting
    assert [x.minute for x in live.due(101 * 60.0 + 2.5)] == [100]
    assert live.due(101 * 60.0 + 30) == []  # 101 (X's) waits until it has ended, whatever X says


@pytest.mark.broker
@pytest.mark.parametrize("ahead", [61, 86_400], ids=["a-minute", "a-day"])
async def test_an_attacker_ticking_ahead_changes_no_real_signal(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path, ahead: int
) -> None:
    """Before every real minute of a replayed history, an attacker publishes its own token's tick stamped
    61 s (or a day) ahead: the real tokens' signals equal the direct decision path (the old rule closed
    each minute on the 61 s tick; a day-ahead tick closed its minute on the wait, and every later real
    tick was `late`)."""
    market = synth_market(6, 360, seed=9)
    # minutes closing on their expected tokens (the default; a token listed mid-feed, published after
    # them, is a straggler, served too), on the majority or on the wait
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path, queue_minutes=100_000, wait_seconds=2.0)
    daemon = Daemon(cfg)
    minutes = market.sort("ts", "token").partition_by("ts", maintain_order=True)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        await waited(daemon.subscribed, "the daemon to subscribe")
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            for part in minutes:
                ts = int(part["ts"][0].timestamp())  # type: ignore[union-attr]
                await client.publish(
                    "memed/ticks/x", _tick(token="ATTACKER", ts=ts + ahead, close=1.0), qos=1
                )
                for row in part.iter_rows(named=True):
                    body = {
                        "token": row["token"],
                        "ts": ts,
                        **{k: row[k] for k in ("open", "high", "low", "close", "volume")},
                    }
                    await client.publish("memed/ticks/x", json.dumps(body).encode(), qos=1)
        last = last_minute(market)
        await wait_until(lambda: daemon.batcher.last_closed >= last, timeout=120)
        daemon.stop()
        await run
    got = {k: v for k, v in read_jsonl(tmp_path / "signals.jsonl").items() if k[0] != "ATTACKER"}
    assert "late" not in daemon.metrics.rejected_counts()
    if ahead > 3600:  # held back, never batched: nothing reached the minute a day ahead
        assert daemon.batcher.deferred == len(minutes)
    assert_same_signals(got, direct_signals(market, cfg, tiny_registry))


def test_replaying_history_a_tick_far_ahead_is_deferred_and_a_real_jump_is_followed() -> None:
    """Replaying history the wall clock bounds nothing: a tick stamped a day ahead would close its
    minute on the wait and make every later real tick `late`. It is deferred instead; a feed that
    really jumps ahead (a gap in the data) is followed, by its quorum or by its silence near the
    watermark; past the deferral bound such ticks are `future_ts`."""
    from memed.daemon.batcher import MinuteBatcher

    now = 10_000_000.0  # history: every minute below ended long ago
    b = MinuteBatcher(wait_seconds=2.0, max_ahead=4, max_deferred=3)
    closed: list[int] = []
    for m in range(10, 20):
        now += 3.0  # a minute of ticks, then longer than the wait: the old rule closed X's minute here
        for t in ("A", "B", "C"):
            b.add(flat_tick(t, m), now)
        if m == 11:
            assert b.add(flat_tick("X", m + 1440), now) is None  # a day ahead: deferred
            assert b.deferred == 1
        closed += [x.minute for x in b.due(now + 3.0)]
    assert closed == list(range(10, 20))
    assert b.counts["late"] == 0
    assert b.deferred == 1
    # the feed jumps 500 minutes ahead (a gap in the data): deferred until a quorum of A, B, C is there
    b.add(flat_tick("A", 519), now + 0.5)
    assert b.due(now + 0.6) == []
    assert b.deferred == 2  # one of three: not yet a quorum, and the feed is not silent near minute 19
    b.add(flat_tick("B", 519), now + 0.7)
    assert b.due(now + 0.8) == []  # two of three: the jump is followed, 519 waits for C or its wait
    assert b.deferred == 1  # X's day-ahead tick stays deferred
    b.add(flat_tick("C", 519), now + 0.9)
    batches = b.due(now + 1.0)
    assert [x.minute for x in batches] == [519]
    assert {t.token for t in batches[0].ticks} == {"A", "B", "C"}
    assert b.counts["late"] == 0
    # after another gap only A lives on: no quorum, but nothing lands near the watermark for the wait
    now += 10.0
    b.add(flat_tick("A", 900), now)
    b.add(flat_tick("A", 901), now)
    assert b.due(now + 1.0) == []  # silent for 9 s: followed, and 900 and 901 now wait their turn
    assert [x.minute for x in b.due(now + 3.5)] == [900, 901]
    assert b.watermark == 901
    assert b.deferred == 1
    # the bound: beyond max_deferred, far-ahead ticks are rejected
    for t in ("Y", "Z"):
        assert b.add(flat_tick(t, 5000), now + 4) is None
    assert b.add(flat_tick("W", 5000), now + 4) == "future_ts"


def test_a_pause_in_a_replay_is_no_jump_ahead() -> None:
    """A tick far ahead of the first minute, before any minute closed, is deferred once one has; and a
    pause in the feed (nothing arrived ahead after it went quiet) does not let it in."""
    from memed.daemon.batcher import MinuteBatcher

    now = 10_000_000.0
    p = MinuteBatcher(wait_seconds=2.0, max_ahead=4)
    p.add(flat_tick("A", 10), now)
    p.add(flat_tick("X", 2000), now)
    p.add(flat_tick("A", 11), now + 0.1)
    assert [x.minute for x in p.due(now + 60.0)] == [10, 11]
    assert p.deferred == 1
    assert p.due(now + 600.0) == []
    assert p.deferred == 1
    # real ticks deferred while the daemon lagged, then promoted: silence after them is a pause too
    q = MinuteBatcher(wait_seconds=2.0, max_ahead=4)
    q.add(flat_tick("A", 10), now)
    assert [x.minute for x in q.due(now + 60.0)] == [10]
    q.add(flat_tick("X", 3000), now + 61.0)
    q.add(flat_tick("A", 16), now + 62.0)  # six past the watermark: deferred too
    assert [x.minute for x in q.due(now + 62.1)] == [16]  # the whole feed (A) moved on: followed
    assert q.due(now + 900.0) == []
    assert q.deferred == 1  # X stays: nothing arrived ahead after A's tick was batched
