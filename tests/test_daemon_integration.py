"""The daemon against a real Mosquitto: ticks in, signals out, equal to the decision path run directly;
broker restarts; checkpoints; malformed input; hot reload; HTTP endpoints."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp
import msgspec
import polars as pl
import pytest
from aiohttp import web

from broker import Mosquitto
from daemon_helpers import (
    assert_same_signals,
    collect,
    daemon_config,
    direct_signals,
    last_minute,
    read_jsonl,
    serve_webhook,
    wait_until,
    waited,
)
from memed.daemon.app import Daemon
from memed.daemon.publish_dataset import publish_dataset
from memed.data import synth_market

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    return synth_market(6, 450, seed=21)


async def test_ticks_in_signals_out_equal_the_direct_decision_path(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path, market: pl.DataFrame
) -> None:
    # one message per tick, minutes closing on their expected tokens (the default: a token the minute
    # did not expect, published after them, is a straggler, served too). The whole replay arrives in
    # seconds: a sink queue of more minutes than it holds, so the written policy of a full queue (drop the
    # oldest minute) cannot drop signals that a slow moment of the machine delayed; the bands policy, so
    # that risk plans (trades) cross the wire too
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path, queue_minutes=1000, policy="bands")
    daemon = Daemon(cfg)
    received: list[bytes] = []
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        sub = tg.create_task(collect(mosquitto.port, "memed/signals/#", received, ready))
        await waited(daemon.subscribed, "the daemon to subscribe")
        await waited(ready, "the test's subscriber")
        await publish_dataset(market, mosquitto.url, batch=False)
        await wait_until(lambda: len(received) >= market.height)
        # the HTTP endpoints while it runs
        await wait_until(lambda: daemon.http_port is not None)
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{daemon.http_port}"
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
                assert (await r.json())["model_set"] == daemon.path.model_set.id
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
                assert f"memed_ticks_total {float(market.height)}" in text
                assert "memed_tick_to_signal_seconds_bucket" in text
            async with http.get(f"{base}/signals/latest?token=SYN00003") as r:
                assert (await r.json())["token"] == "SYN00003"
        daemon.stop()
        await run
        sub.cancel()
    got = {}
    for body in received:
        doc = msgspec.json.decode(body)
        got[(doc["token"], doc["ts"])] = doc
    want = direct_signals(market, cfg, tiny_registry)
    assert_same_signals(got, want)
    assert {d["action"] for d in want.values()} >= {"HOLD"}
    assert any(d["risk"] is not None for d in want.values())


async def test_broker_restart_mid_run_loses_no_minute(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path, market: pl.DataFrame
) -> None:
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path)
    daemon = Daemon(cfg)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        await waited(daemon.subscribed, "the daemon to subscribe")
        feed = tg.create_task(
            publish_dataset(market, mosquitto.url, batch=True, speed=60 * 60)
        )  # a minute per second/60
        await asyncio.sleep(0.8)
        await asyncio.to_thread(mosquitto.restart)
        stats = await feed
        await wait_until(lambda: daemon.batcher.last_closed >= last_minute(market), timeout=60)
        daemon.stop()
        await run
    assert stats["reconnects"] >= 1
    assert daemon.metrics.reconnects._value.get() >= 1
    assert_same_signals(read_jsonl(tmp_path / "signals.jsonl"), direct_signals(market, cfg, tiny_registry))


async def test_stop_checkpoint_restart_continues_identically(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path, market: pl.DataFrame
) -> None:
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path)
    cut = market["ts"].sort().unique()[70]
    first, second = market.filter(pl.col("ts") <= cut), market.filter(pl.col("ts") > cut)
    for part in (first, second):
        daemon = Daemon(cfg)  # the second one restores the checkpoint the first wrote
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(daemon.run())
            await waited(daemon.subscribed, "the daemon to subscribe")
            await publish_dataset(part, mosquitto.url, batch=True)
            await wait_until(lambda d=daemon, p=part: d.batcher.last_closed >= last_minute(p) - 1)
            daemon.stop()  # as SIGTERM does: drain, publish, checkpoint
            await run
        assert (tmp_path / "ckpt.bin").exists()
    assert_same_signals(read_jsonl(tmp_path / "signals.jsonl"), direct_signals(market, cfg, tiny_registry))


async def test_hot_reload_refuses_a_bad_set_and_loads_a_good_one(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    from memed.models.registry import latest_id, set_latest

    registry = tmp_path / "registry"
    good = latest_id(tiny_registry)
    shutil.copytree(tiny_registry / good, registry / good)
    set_latest(registry, good)
    cfg = daemon_config(registry, mosquitto.url, tmp_path)
    daemon = Daemon(cfg)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        await waited(daemon.subscribed, "the daemon to subscribe")
        bad = registry / "bad-set"
        shutil.copytree(registry / good, bad)
        (bad / "lgbm.onnx").write_bytes(b"corrupt")
        set_latest(registry, "bad-set")
        await wait_until(lambda: "bad-set" in daemon._refused)
        assert daemon.path.model_set.id == good
        other = registry / "other-set"
        shutil.copytree(registry / good, other)
        doc = msgspec.json.decode((other / "manifest.json").read_bytes())
        doc["model_set_id"] = "other-set"
        (other / "manifest.json").write_bytes(msgspec.json.encode(doc))
        set_latest(registry, "other-set")
        await wait_until(lambda: daemon.path.model_set.id == "other-set")
        daemon.stop()
        await run
    text = daemon.metrics.render().decode()
    assert 'memed_model_reloads_total{result="refused"} 1.0' in text
    assert 'memed_model_reloads_total{result="loaded"} 1.0' in text


async def test_webhook_and_hummingbot_sinks(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path, market: pl.DataFrame
) -> None:
    posted: list[list[dict[str, object]]] = []
    failures = {"left": 1}  # the first POST fails: the sink must retry

    async def hook(request: web.Request) -> web.Response:
        if failures["left"]:
            failures["left"] -= 1
            return web.Response(status=503)
        posted.append(await request.json())
        return web.Response(status=204)

    runner, port = await serve_webhook(hook)
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path)
    sinks = {"webhook_url": f"http://127.0.0.1:{port}/hook", "hummingbot_topic_prefix": "hbot/signals"}
    cfg = msgspec.structs.replace(cfg, daemon=msgspec.structs.replace(cfg.daemon, **sinks))
    daemon = Daemon(cfg)
    hbot: list[bytes] = []
    ready = asyncio.Event()
    part = market.filter(pl.col("ts") < market["ts"].min() + pl.duration(minutes=20))  # type: ignore[operator]
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        sub = tg.create_task(collect(mosquitto.port, "hbot/signals/#", hbot, ready))
        await waited(daemon.subscribed, "the daemon to subscribe")
        await waited(ready, "the test's subscriber")
        await publish_dataset(part, mosquitto.url, batch=True)
        await wait_until(lambda: sum(len(p) for p in posted) >= part.height - 20)
        daemon.stop()
        await run
        sub.cancel()
    await runner.cleanup()
    got = [s for batch in posted for s in batch]
    written = read_jsonl(tmp_path / "signals.jsonl")
    assert {(s["token"], s["ts"]) for s in got} == set(written)  # every minute's signals, after a retry
    assert failures["left"] == 0
    doc = msgspec.json.decode(hbot[0])
    assert set(doc) == {"id", "timestamp", "trading_pair", "probabilities", "target_pct"}
    assert len(doc["probabilities"]) == 3
    assert abs(sum(doc["probabilities"]) - 1.0) < 1e-9 or doc["probabilities"] == [0.0, 1.0, 0.0]
