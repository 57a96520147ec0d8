"""Scale-out on NATS JetStream: real `memed run --source nats` processes sharing a real nats-server's
partitioned tick stream. Three daemons over 16 partitions; one SIGKILLed mid-run, a fourth added later;
every (token, minute) must get exactly one distinct signal key, every signal must equal the one-process
decision path's over the same ticks, and the takeover is timed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from broker import NatsServer, free_port
from daemon_helpers import assert_same_signals, daemon_config, direct_signals, wait_until
from memed.config import MemedConfig, to_toml
from memed.daemon import mqtt
from memed.daemon.nats.layout import partition_of, server_config
from memed.daemon.publish_dataset import minute_payloads, publish_dataset
from memed.data import synth_market
from memed.monitor.parity import check_parity
from memed.monitor.served_log import read_log

nats = pytest.importorskip("nats", reason="the scale extra: pip install 'memed[scale]'")
pytestmark = pytest.mark.slow

PARTITIONS = 16
TTL = 2.0


def _config(registry: Path, tmp: Path, *, close_on_expected: bool = True) -> MemedConfig:
    section = f"\n[nats]\npartitions = {PARTITIONS}\npinned_ttl_seconds = {TTL}\nheartbeat_seconds = 0.5\n"
    cfg = daemon_config(registry, "mqtt://127.0.0.1:9", tmp, close_on_expected=close_on_expected,
                        wait_seconds=1.0, extra=section + "snapshot_every_minutes = 3\n")  # fmt: skip
    daemon = msgspec.structs.replace(cfg.daemon, jsonl_path="", http_port=0)
    return msgspec.structs.replace(cfg, daemon=daemon)


@pytest.fixture
def nats_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    from memed.config import NatsConfig

    (tmp_path / "nats").mkdir()
    server = NatsServer(tmp_path / "nats", server_config(NatsConfig(partitions=PARTITIONS)))
    server.start()
    yield server
    server.stop()


def _start(conf: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as err:
        command = ["run", "--source", "nats", "--nats-url", url, "--config", str(conf)]
        return subprocess.Popen([sys.executable, "-m", "memed.cli", *command], stdout=subprocess.DEVNULL,
                                stderr=err, env=env)  # fmt: skip


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if event in line:
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if doc.get("event") == event:
                out.append(doc)
    return out


def _owned(log: Path) -> set[int]:
    """The partitions a daemon holds by its log (taken, less released and lost, in order)."""
    owned: set[int] = set()
    for line in log.read_text().splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if doc.get("event") == "partition_taken":
            owned.add(doc["partition"])
        elif doc.get("event") in ("partition_released", "partition_lost"):
            owned.discard(doc["partition"])
    return owned


@dataclass
class Run:
    copies: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    """Every signal message seen on memed.signals.* (replayed copies included)."""
    victim_held: set[int] = field(default_factory=set)
    killed_at: float = 0.0
    stored: int = 0
    """Messages the signal stream kept."""


async def _serve(market: pl.DataFrame, want: set[tuple[str, str]], conf: Path, url: str, logs: list[Path]
                 ) -> Run:  # fmt: skip
    """Three daemons, the feed published minute by minute; at minute 20 the second daemon is SIGKILLed,
    at minute 40 a fourth starts; when every signal is out, the rest are stopped with SIGTERM."""
    run = Run()
    procs = [_start(conf, url, logs[i]) for i in range(3)]
    nc = await nats.connect(url)

    async def on_signal(msg: Any) -> None:
        doc = msgspec.json.decode(msg.data)
        run.copies[(doc["token"], doc["ts"])].append(doc)

    try:
        await nc.subscribe("memed.signals.*", cb=on_signal)
        await wait_until(lambda: all(_events(log, "daemon_start") for log in logs[:3]), timeout=90)
        await asyncio.sleep(1.5)  # every daemon has a heartbeat in: each asks for its share, 6 of 16
        js = nc.jetstream()
        before: set[str] = set()
        for i, (_minute, messages) in enumerate(minute_payloads(market, "memed/ticks", batch=False)):
            # the ticks of tokens the minute did not expect (listed just now) a moment after the rest:
            # a partition that has closed the minute by then serves them as stragglers
            late = [m for m in messages if before and m[0] not in before]
            for part in ([m for m in messages if m not in late], late):
                await asyncio.gather(*(js.publish(t.replace("/", "."), b) for t, b in part))
                await asyncio.sleep(0.1)
            before = {t for t, _ in messages}
            await asyncio.sleep(0.05)
            if i == 20:
                run.victim_held = _owned(logs[1])
                procs[1].send_signal(signal.SIGKILL)
                run.killed_at = time.time()
                assert await asyncio.to_thread(procs[1].wait, 30) == -signal.SIGKILL
            if i == 40:
                procs.append(_start(conf, url, logs[3]))
                await wait_until(lambda: bool(_events(logs[3], "daemon_start")), timeout=60)
        try:
            await wait_until(lambda: want <= run.copies.keys(), timeout=60, interval=0.2)
        except TimeoutError:
            missing = sorted(want - run.copies.keys())
            raise AssertionError(
                f"{len(missing)} of {len(want)} signals missing, e.g. {missing[:8]}"
            ) from None
        for proc in (procs[0], procs[2], procs[3]):
            proc.send_signal(signal.SIGTERM)
        for proc in (procs[0], procs[2], procs[3]):
            assert await asyncio.to_thread(proc.wait, 60) == 0
        run.stored = (await js.stream_info("MEMED_SIGNALS")).state.messages
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await nc.close()
    return run


async def test_three_daemons_share_partitions_survive_a_kill_and_take_a_fourth(
    tiny_registry: Path, nats_server: NatsServer, tmp_path: Path
) -> None:
    market = synth_market(32, 70, seed=11)
    cfg = _config(tiny_registry, tmp_path)
    served = tmp_path / "served"  # every daemon's served-feature log, one folder
    cfg = msgspec.structs.replace(
        cfg, monitor=msgspec.structs.replace(cfg.monitor, log_dir=str(served), log_share=1.0)
    )
    conf = tmp_path / "run.toml"
    conf.write_text(to_toml(cfg))
    want = direct_signals(market, cfg, tiny_registry)
    assert len(want) == market.height
    logs = [tmp_path / f"daemon{i}.log" for i in range(4)]
    run = await _serve(market, set(want), conf, nats_server.url, logs)

    # every (token, minute) got exactly one distinct signal key, and every copy equals the one-process path's
    copies = run.copies
    assert copies.keys() == want.keys(), (len(copies), len(want))
    assert all(len({c["key"] for c in cs}) == 1 for cs in copies.values())
    assert all(all(c == cs[0] for c in cs) for cs in copies.values())
    assert_same_signals({k: cs[0] for k, cs in copies.items()}, want)
    assert sum(len(cs) - 1 for cs in copies.values()) > 0  # the takeover's replay published minutes again ...
    assert run.stored == len(want)  # ... which the signal stream's duplicate window dropped

    # the partitions were shared, the killed daemon's taken over, and the fourth daemon got its share
    assert all(_events(log, "partition_taken") for log in logs), [log.read_text()[-2000:] for log in logs]
    assert len(run.victim_held) >= 3, run.victim_held
    retaken = [e for log in (logs[0], logs[2], logs[3]) for e in _events(log, "partition_taken")
               if e["partition"] in run.victim_held and e["at"] > run.killed_at]  # fmt: skip
    assert {e["partition"] for e in retaken} == run.victim_held, (retaken, run.victim_held)
    first = {p: min(e["at"] for e in retaken if e["partition"] == p) for p in run.victim_held}
    takeover = max(first.values()) - run.killed_at
    assert any(e["replayed"] > 0 for e in retaken)  # from a snapshot, the stream replayed since
    assert takeover < TTL + 8.0, takeover
    print(f"takeover: {takeover:.2f} s after SIGKILL for {len(first)} partitions (pinned TTL {TTL} s)")
    assert any(
        e["why"] == "rebalance" for log in (logs[0], logs[2]) for e in _events(log, "partition_released")
    )
    assert not any(_events(log, "minute_failed") for log in logs)

    # the four daemons' served-feature logs together: every bar served once at least, and every feature
    # and probability equal to the batch drivers' over the same bars (memed check parity), through the
    # kill, the takeovers and the rebalancing
    assert read_log(served)["run"].n_unique() == 4
    report = check_parity(served, tiny_registry, cfg)
    assert report.rows == market.height
    assert report.ok, (report.features, report.probabilities, report.causes, report.examples)


async def _collect_batches(url: str, subject: str, into: dict[tuple[str, str], dict[str, Any]]) -> Any:
    nc = await nats.connect(url)

    async def on_batch(msg: Any) -> None:
        for doc in msgspec.json.decode(msg.data):
            into[(doc["token"], doc["ts"])] = doc

    await nc.subscribe(subject, cb=on_batch)
    return nc


async def _plant_corrupt_snapshot(nc: Any, cfg: MemedConfig, token: str) -> None:
    """A corrupt snapshot waiting for ``token``'s partition: it must be refused, counted, and the
    partition started afresh from the consumer's start (so the signals do not change)."""
    store = await nc.jetstream().create_object_store(cfg.nats.snapshot_bucket)
    await store.put(f"partition-{partition_of(token, PARTITIONS):04d}", b"MEMEDPS1" + b"\x00" * 64)


def _assert_counted(metrics: str) -> None:
    """The vandal's two messages and the planted snapshot, each counted under its reason."""
    assert 'memed_ticks_rejected_total{reason="wrong_partition"} 1.0' in metrics
    assert 'memed_ticks_rejected_total{reason="malformed_json"} 1.0' in metrics, metrics
    assert 'memed_nats_snapshots_total{result="corrupt"} 1.0' in metrics


async def _get(port: int, path: str) -> bytes:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return await resp.read()


async def test_one_daemon_serves_an_mqtt_feed_through_nats_servers_mqtt_listener(
    tiny_registry: Path, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Feeds and bots that speak MQTT use nats-server's MQTT listener: ticks on memed/ticks/<token> are
    mapped to the partitions, signals come back on memed/signals/<token>. A lone daemon serves every
    partition that has a token; a malformed message and a tick on another token's subject are counted,
    not fatal; so is a corrupt snapshot."""

    market = synth_market(6, 40, seed=4)
    cfg = _config(tiny_registry, tmp_path, close_on_expected=False)
    port = free_port()
    cfg = msgspec.structs.replace(
        cfg,
        daemon=msgspec.structs.replace(cfg.daemon, http_port=port),
        nats=msgspec.structs.replace(cfg.nats, signal_batch_subject="memed.batch"),
    )
    conf = tmp_path / "run.toml"
    conf.write_text(to_toml(cfg))
    want = direct_signals(market, cfg, tiny_registry)
    log = tmp_path / "daemon.log"
    proc = _start(conf, nats_server.url, log)
    got: dict[tuple[str, str], dict[str, Any]] = {}
    batched: dict[tuple[str, str], dict[str, Any]] = {}  # from the partitions' arrays on memed.batch
    nc = await _collect_batches(nats_server.url, "memed.batch", batched)
    await _plant_corrupt_snapshot(nc, cfg, "SYN00000")
    try:
        await wait_until(lambda: bool(_events(log, "daemon_start")), timeout=90)
        async with mqtt.client("127.0.0.1", nats_server.mqtt_port, identifier="bot") as bot:
            await bot.subscribe("memed/signals/#", qos=1)

            async def listen() -> None:
                async for message in bot.messages:
                    doc = msgspec.json.decode(bytes(message.payload))  # type: ignore[arg-type]
                    got[(doc["token"], doc["ts"])] = doc

            listener = asyncio.create_task(listen())
            async with mqtt.client("127.0.0.1", nats_server.mqtt_port, identifier="vandal") as vandal:
                await vandal.publish("memed/ticks/SYN00000", b"{not json", qos=1)
                # SYN00001 belongs to partition 4, SYN00000's subject is mapped to partition 7
                await vandal.publish(
                    "memed/ticks/SYN00000", b'{"token": "SYN00001", "ts": 60, "close": 1.0}', qos=1
                )
            await publish_dataset(market, f"mqtt://127.0.0.1:{nats_server.mqtt_port}", speed=600)
            await wait_until(lambda: want.keys() <= got.keys() & batched.keys(), timeout=60, interval=0.2)
            listener.cancel()
        health = msgspec.json.decode(await _get(port, "/healthz"))
        metrics = (await _get(port, "/metrics")).decode()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        await nc.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert_same_signals(got, want)
    assert_same_signals(batched, want)
    taken = {e["partition"] for e in _events(log, "partition_taken")}  # the partitions its 6 tokens map to
    mapped = {partition_of(t, PARTITIONS) for t in market["token"].unique()}  # memed's hash is the server's
    assert set(health["partitions"]) == taken == mapped
    assert len(taken) >= 3
    assert health["live_daemons"] == 1
    assert f"memed_nats_partitions_owned {len(taken)}.0" in metrics
    _assert_counted(metrics)
    assert _events(log, "partition_snapshot_refused")
    assert {e["partition"] for e in _events(log, "partition_released")} == taken  # handed back on SIGTERM
