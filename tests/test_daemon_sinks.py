"""Sinks behind one fan-out: a hanging webhook or a full disk cannot stall the minute loop or another sink,
and every drop and failure is counted by sink; MQTT's private parts are checked against a real broker."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import aiomqtt
import msgspec
import polars as pl
import pytest
from aiohttp import web

from broker import Mosquitto
from daemon_helpers import collect, daemon_config, direct_signals, serve_webhook, wait_until, waited
from memed.config import MemedConfig
from memed.daemon.app import Daemon
from memed.daemon.checkpoint import read_checkpoint
from memed.daemon.metrics import DaemonMetrics
from memed.daemon.mqtt import PrivateApiError, check_private_api
from memed.daemon.publish_dataset import publish_dataset
from memed.data import synth_market

pytestmark = pytest.mark.broker


def bad_sinks_config(cfg: MemedConfig, webhook_url: str) -> MemedConfig:
    daemon_cfg = msgspec.structs.replace(
        cfg.daemon,
        webhook_url=webhook_url,
        jsonl_path="/dev/full",  # every write fails: ENOSPC
        sink_queue_minutes=3,
        sink_drain_seconds=1.0,
    )
    return msgspec.structs.replace(cfg, daemon=daemon_cfg)


def p99(values: Iterable[float]) -> float:
    xs = sorted(values)
    return xs[int(0.99 * (len(xs) - 1))]


@pytest.mark.parametrize("webhook", ["hangs", "fails"])
async def test_a_bad_webhook_and_a_full_disk_stall_nothing_else(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path, webhook: str
) -> None:
    """A webhook that never answers (or answers 500 to every retry) and a JSONL file on a full disk: MQTT
    delivers every signal with p99 under a second, SIGTERM's drain is bounded, every loss is counted."""
    market = synth_market(4, 30, seed=5)
    hung = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        hung.set()
        if webhook == "fails":
            return web.Response(status=500)
        await asyncio.sleep(3600)  # never answers while the test runs
        return web.Response(status=204)

    runner, port = await serve_webhook(hang)
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path, extra="", close_on_expected=True)
    cfg = bad_sinks_config(cfg, f"http://127.0.0.1:{port}/hook")
    daemon = Daemon(cfg)
    received: list[bytes] = []
    ready = asyncio.Event()
    minutes = market["ts"].n_unique()
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        sub = tg.create_task(collect(mosquitto.port, "memed/signals/#", received, ready))
        await waited(daemon.subscribed, "the daemon to subscribe")
        await waited(ready, "the test's subscriber")
        t0 = time.perf_counter()
        await publish_dataset(market, mosquitto.url, batch=True, speed=600)  # a minute every 0.1 s
        await wait_until(lambda: len(received) >= market.height, timeout=30)
        served = time.perf_counter() - t0
        assert hung.is_set()
        t_stop = time.perf_counter()
        daemon.stop()
        await run
        stopped_in = time.perf_counter() - t_stop
        sub.cancel()
    await runner.cleanup()
    # the MQTT signals all arrived, equal to the decision path's, while the webhook hung
    got = {(d["token"], d["ts"]): d for d in map(msgspec.json.decode, received)}
    want = direct_signals(market, cfg, tiny_registry)
    assert got.keys() == want.keys()
    assert served < 15, served
    assert stopped_in < 5, stopped_in  # the drain is bounded by sink_drain_seconds
    assert len(daemon.recent_latencies) == minutes
    assert p99(daemon.recent_latencies) < 1.0, sorted(daemon.recent_latencies)[-5:]
    counts = daemon.metrics.sink_counts()
    assert counts[("mqtt", "sent")] == market.height
    assert counts.get(("mqtt", "dropped"), 0) == 0
    assert counts[("jsonl", "failed")] == market.height  # every minute failed, counted, and served on
    assert daemon.checkpoint is not None
    outbox = read_checkpoint(daemon.checkpoint).outbox
    kept = sum(len(out.signals) for out in outbox.get("webhook", []))
    assert_webhook_losses(webhook, daemon.metrics, Counter(ts for _, ts in want), kept)


def assert_webhook_losses(webhook: str, metrics: DaemonMetrics, per_minute: Counter[str], kept: int) -> None:
    """``kept``: signals still queued at the stop (the checkpoint sends them after a restart)."""
    counts = metrics.sink_counts()
    total = sum(per_minute.values())
    if webhook == "fails":  # retried with backoff: failed, dropped or kept for the restart, all counted
        assert counts.get(("webhook", "sent"), 0) == 0
        assert counts[("webhook", "failed")] > 0
        assert counts[("webhook", "failed")] + counts.get(("webhook", "dropped"), 0) + kept == total
        return
    # the first minute in the hung POST, the last three queued: every minute between dropped, counted
    by_time = [per_minute[ts] for ts in sorted(per_minute)]
    assert counts[("webhook", "dropped")] == sum(by_time[1:-3])
    text = metrics.render().decode()
    assert 'memed_sink_signals_total{result="dropped",sink="webhook"}' in text
    assert 'memed_sink_queue_minutes{sink="webhook"} 3.0' in text


async def test_the_bulk_publisher_finds_the_private_parts_it_relies_on(mosquitto: Mosquitto) -> None:
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        check_private_api(client)  # a new aiomqtt or paho release without them fails here, by name

        class Stripped:
            _client = None
            _queue = None

        with pytest.raises(PrivateApiError, match=r"lacks aiomqtt.Client._client .*, aiomqtt.Client._queue"):
            check_private_api(Stripped())  # type: ignore[arg-type]


async def test_large_messages_arrive_whole_and_in_order(mosquitto: Mosquitto) -> None:
    """Messages past LARGE_MESSAGE are written as memoryviews of their packets (paho copies the rest of a
    bytes packet on every partial write): each arrives byte for byte, in order, beside small ones."""
    from memed.daemon.mqtt import LARGE_MESSAGE, publish_many

    rng = random.Random(5)
    bodies = [rng.randbytes(n) for n in (3 * LARGE_MESSAGE + 17, 12, 20 * LARGE_MESSAGE, 1, LARGE_MESSAGE)]
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
        await sub.subscribe("big/#", qos=1)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, max_inflight_messages=0) as pub:
            assert not await publish_many(pub, [(f"big/{i}", b) for i, b in enumerate(bodies)])
        got = []
        async with asyncio.timeout(30):
            async for message in sub.messages:
                got.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]
                if len(got) == len(bodies):
                    break
    assert got == [(f"big/{i}", b) for i, b in enumerate(bodies)]


async def test_the_jsonl_sink_reopens_its_file_after_a_failed_write(tmp_path: Path) -> None:
    """A write that fails (here: the descriptor closed under the sink, as when a disk goes away) closes
    the file; the minute is written again on a fresh one, and every line is whole."""
    import os

    from memed.daemon.sinks import JsonlSink, Outgoing, SinkError
    from memed.signals.frame import SignalFrame
    from memed.signals.schema import Signal

    def minute(m: int) -> Outgoing:
        sigs = [Signal(key=f"k{m}{t}", token=t, ts=f"m{m}", action="HOLD", strength=0.0, p_up=None,
                       horizons={}, model_set="s", feature_spec="f") for t in ("A", "B")]  # fmt: skip
        frame = SignalFrame.from_signals(sigs)
        return Outgoing(m, frame, frame, 0.0)

    sink = JsonlSink(tmp_path / "signals.jsonl")
    await sink.send(minute(1))
    assert sink._fh is not None
    os.close(sink._fh.fileno())  # the next write fails with EBADF
    await sink.send(minute(2))
    await sink.send(minute(3))
    await sink.close()
    lines = (tmp_path / "signals.jsonl").read_bytes().splitlines()
    assert [msgspec.json.decode(line)["key"] for line in lines] == ["k1A", "k1B", "k2A", "k2B", "k3A", "k3B"]
    full = JsonlSink(Path("/dev/full"))  # every write fails: the minute fails after one more try
    with pytest.raises(SinkError, match="/dev/full"):
        await full.send(minute(4))
    await full.close()


@pytest.mark.parametrize(
    ("mode", "want"),
    [("always", [["A", "B", "C"], ["A", "B", "C"]]), ("changes", [["A", "B", "C"], ["A", "C"]]),
     ("never", [["A"], []])],
)  # fmt: skip
def test_the_hold_filter_publishes_what_each_mode_promises(mode: str, want: list[list[str]]) -> None:
    """A BUY always; a HOLD every minute, when its (action, reason) changed (a HOLD after a BUY revokes
    it; a new reason is news), or never."""
    from memed.daemon.sinks import HoldFilter
    from memed.signals.frame import SignalFrame
    from memed.signals.schema import Signal

    def minute(*rows: tuple[str, str, str]) -> SignalFrame:
        return SignalFrame.from_signals([
            Signal(key=t, token=t, ts="m", action=a, strength=0.0, p_up=None, horizons={}, reason=r,
                   model_set="s", feature_spec="f") for t, a, r in rows])  # fmt: skip

    holds = HoldFilter(mode)
    first = minute(("A", "BUY", ""), ("B", "HOLD", "no_edge"), ("C", "HOLD", "no_edge"))
    second = minute(("A", "HOLD", "no_edge"), ("B", "HOLD", "no_edge"), ("C", "HOLD", "warming_up"))
    assert [holds.select(first).tokens(), holds.select(second).tokens()] == want


async def test_a_send_cancelled_at_the_stop_stays_unsent_and_uncounted() -> None:
    # the daemon stops the sinks' workers before its last checkpoint: a minute still being sent (a webhook
    # retrying) must then be in what the checkpoint keeps, and not also end up counted as failed
    from memed.daemon.sinks import FanOut, Outgoing, SinkError
    from memed.signals.frame import SignalFrame, frame_schema

    class Slow:
        name, published_only = "slow", False
        started = asyncio.Event()

        async def send(self, out: Outgoing) -> None:
            self.started.set()
            await asyncio.sleep(3600)
            raise SinkError("gave up")

        async def close(self) -> None:
            pass

    sink = Slow()
    metrics = DaemonMetrics()
    fanout = FanOut([sink], metrics, 4)
    empty = SignalFrame(pl.DataFrame(schema=frame_schema(["15"])))
    minutes = [Outgoing(m, empty, empty, 0.0) for m in (1, 2)]
    for out in minutes:
        fanout.offer(out)
    ((_, work),) = fanout.workers()
    worker = asyncio.create_task(work)
    await waited(sink.started, "the send to start")
    assert not await fanout.drain(0.1)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    assert [o.minute for o in fanout.unsent()["slow"]] == [1, 2]  # the one in flight first
    assert metrics.sink_counts() == {}
