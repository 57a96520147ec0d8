"""A token that returns from a hole is not expected in its minute, which closes as soon as the expected
tokens have ticked: its tick, published after theirs, used to be dropped as ``late`` — and the live
features of that token then differed from the backtest's (a flat-filled bar instead of the real one) —
and with a feed in token order, a returning or new token sorted after the expected ones was never served
again. Such a straggler is now served as a batch of its own for that minute."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import Mosquitto
from daemon_helpers import (
    assert_same_signals,
    daemon_config,
    direct_signals,
    flat_tick,
    read_jsonl,
    wait_until,
    waited,
)
from memed.daemon import mqtt
from memed.daemon.app import Daemon
from memed.daemon.batcher import MinuteBatcher
from memed.daemon.publish_dataset import minute_payloads
from memed.daemon.ticks import Tick
from memed.daemon.wire import to_signals
from memed.data import load_dataset, synth_market
from memed.data.bars import BAR_FIELDS
from memed.data.frames import bar_matrix, epoch_minutes
from memed.decision import DecisionPath
from memed.models.registry import load_model_set


def test_a_returning_token_after_its_minute_closed_is_served_in_a_batch_of_its_own() -> None:
    t0 = 20 * 60.0
    b = MinuteBatcher(wait_seconds=30.0)
    for token in ("A", "B", "C"):
        assert b.add(flat_tick(token, 10), t0) is None
    b.add(flat_tick("A", 11), t0 + 1)
    b.add(flat_tick("B", 11), t0 + 1)  # a majority moved on: minute 10 closes
    assert [(x.minute, x.tokens, x.stragglers) for x in b.due(t0 + 1)] == [(10, ["A", "B", "C"], False)]
    b.add(flat_tick("C", 11), t0 + 2)  # every expected token: minute 11 closes, without D (not in 10)
    assert [(x.minute, x.tokens) for x in b.due(t0 + 2)] == [(11, ["A", "B", "C"])]
    assert b.add(flat_tick("D", 11, 2.0), t0 + 3) is None  # D returns from a hole: a straggler of minute 11
    assert b.add(flat_tick("D", 11, 2.0), t0 + 3) == "duplicate"
    assert b.add(flat_tick("D", 11, 3.0), t0 + 3) is None  # replaced before it is due: latest wins
    assert b.add(flat_tick("E", 10), t0 + 3) == "late"  # an older minute than the newest closed one
    assert b.add(flat_tick("A", 11, 5.0), t0 + 3) == "late"  # minute 11 had A
    assert not b.idle
    # the stragglers are restored from a checkpoint like unclosed minutes
    again = MinuteBatcher(wait_seconds=30.0)
    again.load_state(b.state())
    for batcher in (b, again):
        (late,) = batcher.due(t0 + 3)
        assert (late.minute, late.tokens, late.stragglers, late.ticks[0].close) == (11, ["D"], True, 3.0)
        assert batcher.idle
        assert batcher.add(flat_tick("D", 11, 4.0), t0 + 4) == "late"  # served once: a later copy is late
        for token in ("A", "B", "C"):  # D joined minute 11's tokens: minute 12 now waits for it too
            batcher.add(flat_tick(token, 12), t0 + 5)
        assert batcher.due(t0 + 5) == []
        batcher.add(flat_tick("D", 12), t0 + 6)
        assert [(x.minute, len(x.tokens)) for x in batcher.due(t0 + 6)] == [(12, 4)]
    assert b.counts == {"duplicate": 1, "replaced": 1, "late": 3}


def test_a_withdrawn_straggler_is_taken_out() -> None:
    b = MinuteBatcher(wait_seconds=30.0)
    b.add(flat_tick("A", 10), 0.0)
    assert [x.minute for x in b.due(0.0, flush=True)] == [10]
    b.add(flat_tick("B", 10), 1.0)
    b.add(flat_tick("C", 10), 1.0)
    assert b.withdraw(["B"]) == 1
    (late,) = b.due(1.0)
    assert (late.tokens, late.stragglers) == (["C"], True)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n_tokens=st.integers(2, 6), n_minutes=st.integers(5, 30))
def test_a_feed_in_time_order_has_every_bar_served_once_in_each_tokens_order(
    data: st.DataObject, n_tokens: int, n_minutes: int
) -> None:
    # any feed that sends each minute's ticks (in any order, some in column batches) before the next
    # minute's, with tokens missing some minutes (holes, late listings): every bar is served once, in
    # each token's time order, whenever the daemon looks for due batches and restarts from a checkpoint
    # — what the backtest needs
    present = data.draw(st.lists(st.lists(st.booleans(), min_size=n_tokens, max_size=n_tokens),
                                 min_size=n_minutes, max_size=n_minutes))  # fmt: skip
    b = MinuteBatcher(wait_seconds=30.0)
    served: list[tuple[str, int, float]] = []
    want = {}

    def look(now: float, flush: bool = False) -> None:
        for batch in b.due(now, flush=flush):
            close = batch.bars[BAR_FIELDS.index("close")].tolist()
            served.extend((t, batch.minute, c) for t, c in zip(batch.tokens, close, strict=True))

    for m, row in enumerate(present, start=100):
        now = (m + 1) * 60.0
        ticks = [flat_tick(f"T{k}", m, float(1000 * m + k)) for k, here in enumerate(row) if here]
        want |= {(t.token, m): t.close for t in ticks}
        order = data.draw(st.permutations(ticks))
        i = 0
        while i < len(order):
            size = data.draw(st.integers(1, len(order) - i))
            part = order[i : i + size]
            i += size
            if size > 1:  # a column batch (taken whole when that is what its ticks one by one would do)
                bars = np.array([[getattr(t, f) for f in BAR_FIELDS] for t in part]).T
                if not b.add_columns([t.token for t in part], np.full(size, m), bars, now):
                    for t in part:
                        assert b.add(t, now) is None
            else:
                assert b.add(part[0], now) is None
            if data.draw(st.booleans()):
                look(now)
            if data.draw(st.integers(0, 9)) == 0:  # a restart from a checkpoint here
                restored = MinuteBatcher(wait_seconds=30.0)
                restored.load_state(b.state())
                assert not b.counts
                b = restored
    look((100 + n_minutes + 1) * 60.0, flush=True)
    assert len(served) == len(want) == len({(t, m) for t, m, _ in served})
    assert {(t, m): c for t, m, c in served} == want
    for token in {t for t, _, _ in served}:
        minutes = [m for t, m, _ in served if t == token]
        assert minutes == sorted(minutes)
    assert not b.counts


def _with_holes(market: pl.DataFrame, token: str, share: float, seed: int) -> pl.DataFrame:
    """``market`` less a ``share`` of ``token``'s bars, in holes of 1 to 3 minutes."""
    rng = np.random.default_rng(seed)
    ts = market.filter(pl.col("token") == token)["ts"].to_list()
    drop: set[object] = set()
    while len(drop) < share * len(ts):
        i = int(rng.integers(30, len(ts) - 5))
        drop.update(ts[i : i + int(rng.integers(1, 4))])
    keep = [t != token or ts not in drop for t, ts in market.select("token", "ts").iter_rows()]
    return market.filter(pl.Series(keep))


@pytest.mark.parametrize("close_on_expected", [True, False])
def test_ticks_in_token_order_with_holes_in_the_last_token_serve_what_the_backtest_has(
    close_on_expected: bool, tiny_market: Path, tiny_registry: Path, tmp_path: Path
) -> None:
    # every minute's ticks one by one, in token order, as a feed looping over its tokens publishes them;
    # the token sorted last has holes, so after each it returns behind every expected token. The
    # batches are decided as the daemon decides them: after every tick, what is due.
    bars, _ = load_dataset([tiny_market])
    bars = bars.filter(pl.col("ts") < bars["ts"].min() + pl.duration(minutes=400))  # type: ignore[operator]
    last = bars["token"].max()
    market = _with_holes(bars, str(last), 0.1, seed=1).sort("ts", "token")
    cfg = daemon_config(tiny_registry, "mqtt://127.0.0.1:1", tmp_path, close_on_expected=close_on_expected)
    path = DecisionPath(load_model_set(tiny_registry), cfg.signals, cfg.risk)
    batcher = MinuteBatcher(wait_seconds=30.0, close_on_expected=close_on_expected)
    ts, x = epoch_minutes(market["ts"]).astype(np.int64), bar_matrix(market)
    tokens = market["token"].to_list()
    got = {}
    stragglers = 0
    for i, token in enumerate(tokens):
        now = (ts[i] + 1) * 60.0
        batcher.add(Tick(token, int(ts[i]), *x[:, i].tolist()), now)
        for batch in batcher.due(now, flush=i == len(tokens) - 1):
            stragglers += batch.stragglers
            for sig in to_signals(path.process(batch.tokens, float(batch.minute), batch.bars)):
                got[(sig.token, sig.ts)] = msgspec.to_builtins(sig)
    want = direct_signals(market, cfg, tiny_registry)
    assert len(want) == market.height
    assert_same_signals(got, want)
    assert batcher.counts.total() == 0  # no tick dropped
    if close_on_expected:
        assert stragglers >= 5  # the returning token came after the expected ones closed its minute


@pytest.mark.broker
async def test_a_daemon_fed_ticks_in_token_order_serves_the_returning_and_new_tokens(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # one message per tick, minutes closing on their expected tokens (the default); the token sorted last
    # has holes, and one token is listed mid-way. The feed sends the ticks of the tokens a minute did not
    # expect (returning, new) only after the daemon has closed the minute: they used to be dropped as
    # late, and with a feed in token order, for good
    market = _with_holes(synth_market(5, 300, seed=21), "SYN00004", 0.1, seed=2)
    start = market["ts"].min() + pl.duration(minutes=120)  # type: ignore[operator]
    market = market.filter((pl.col("token") != "SYN00003") | (pl.col("ts") >= start)).sort("ts", "token")
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path, queue_minutes=1000, wait_seconds=0.5)
    want = direct_signals(market, cfg, tiny_registry)
    daemon = Daemon(cfg)
    stragglers = 0
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        await waited(daemon.subscribed, "the daemon to subscribe")
        host, port, _ = mqtt.broker_address(mosquitto.url)
        async with mqtt.client(host, port) as client:
            before: set[str] = set()
            for minute, messages in minute_payloads(market, "memed/ticks", batch=False):
                tokens = [topic.rsplit("/", 1)[1] for topic, _ in messages]
                unexpected = [m for m, t in zip(messages, tokens, strict=True) if before and t not in before]
                assert not await mqtt.publish_many(client, [m for m in messages if m not in unexpected])
                await wait_until(lambda m=minute: daemon.batcher.last_closed >= m)  # type: ignore[misc]
                assert not await mqtt.publish_many(client, unexpected)
                stragglers += len(unexpected)
                before = set(tokens)
        with contextlib.suppress(TimeoutError):  # (what is missing, the comparison below names)
            await wait_until(lambda: len(read_jsonl(tmp_path / "signals.jsonl")) >= len(want), timeout=30)
        daemon.stop()
        await run
    assert_same_signals(read_jsonl(tmp_path / "signals.jsonl"), want)
    assert stragglers >= 5
    assert daemon.metrics.stragglers._value.get() == stragglers
    assert daemon.metrics.rejected_counts().get("late", 0) == 0
