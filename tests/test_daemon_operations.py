"""Operating the daemon: one writer per checkpoint, a cap on tracked tokens, refused credentials and a
client id used twice end the daemon with one clear line instead of retrying forever."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest

from broker import Mosquitto, free_port
from daemon_helpers import (
    assert_same_signals,
    daemon_config,
    direct_signals,
    read_jsonl,
    serve_market,
    waited,
)
from memed.config import to_toml
from memed.daemon.app import CheckpointLockedError, ClientIdConflictError, Daemon
from memed.data import synth_market


def test_a_second_daemon_on_one_checkpoint_is_refused(tiny_registry: Path, tmp_path: Path) -> None:
    cfg = daemon_config(tiny_registry, "mqtt://127.0.0.1:1", tmp_path)
    first = Daemon(cfg)
    with pytest.raises(CheckpointLockedError, match="another memed run holds this checkpoint"):
        Daemon(cfg)
    asyncio.run(first.close())
    asyncio.run(Daemon(cfg).close())  # the lock is released with the first


def test_new_tokens_beyond_max_tokens_are_counted_rejections(tiny_registry: Path, tmp_path: Path) -> None:
    cfg = daemon_config(tiny_registry, "mqtt://127.0.0.1:1", tmp_path, extra="max_tokens = 3\n")
    daemon = Daemon(cfg)
    ts = 1_767_225_540
    for token in ("A", "B", "C", "D", "E"):
        daemon._on_message(json.dumps({"token": token, "ts": ts, "close": 1.0}).encode())
    daemon._on_message(json.dumps({"token": "A", "ts": ts + 60, "close": 1.1}).encode())  # known: accepted
    assert daemon.metrics.rejected_counts() == {"too_many_tokens": 2.0}
    assert daemon.batcher.tracked == 3
    asyncio.run(daemon.close())


def _auth_broker(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    pw = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(pw), "memed", "right"], check=True, capture_output=True
    )
    conf = tmp_path / "auth.conf"
    user = os.environ.get("USER", "root")
    conf.write_text(f"user {user}\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n")
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, port


@pytest.mark.broker
def test_wrong_credentials_end_the_daemon_with_status_2(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broker, port = _auth_broker(tmp_path)
    try:
        extra = 'username = "memed"\npassword = "Hunter2-secret"\nmax_refusals = 3\n'
        cfg = daemon_config(tiny_registry, f"mqtt://127.0.0.1:{port}", tmp_path, extra=extra)
        conf = tmp_path / "run.toml"
        conf.write_text(to_toml(cfg).replace('password = "***"', 'password = "Hunter2-secret"'))
        run = subprocess.run([sys.executable, "-m", "memed.cli", "run", "--config", str(conf)],
                             capture_output=True, timeout=120, check=False)  # fmt: skip
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    err = run.stderr.decode()
    assert run.returncode == 2, err[-2000:]
    assert "error: broker refused credentials 3 times in a row" in err
    assert "Hunter2-secret" not in err  # the password is never printed
    assert (tmp_path / "ckpt.bin").exists()  # the fatal exit still wrote the checkpoint


@pytest.mark.broker
async def test_two_daemons_with_one_client_id_stop_with_client_id_conflict(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    a = Daemon(daemon_config(tiny_registry, mosquitto.url, tmp_path / "a"))
    cfg_b = daemon_config(tiny_registry, mosquitto.url, tmp_path / "b")
    b = Daemon(
        msgspec.structs.replace(cfg_b, daemon=msgspec.structs.replace(cfg_b.daemon, client_id=a.d.client_id))
    )
    runs = [asyncio.create_task(d.run()) for d in (a, b)]
    done, pending = await asyncio.wait(runs, timeout=90, return_when=asyncio.FIRST_COMPLETED)
    for d in (a, b):
        d.stop()
    await asyncio.wait(pending, timeout=30)
    assert done, "neither daemon noticed the conflict within 90 s"
    errors = [t.exception() for t in done]
    assert any(isinstance(e, ClientIdConflictError) for e in errors), errors
    assert "client_id_conflict" in str(next(e for e in errors if e is not None))


@pytest.mark.broker
def test_memed_replay_reads_its_password_from_a_file_or_the_environment(
    tiny_market: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broker, port = _auth_broker(tmp_path)
    secret = tmp_path / "password"
    secret.write_text("right\n")
    base = [sys.executable, "-m", "memed.cli", "replay", str(tiny_market), "--broker", f"mqtt://127.0.0.1:{port}",
            "--batch", "--username", "memed"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MEMED_MQTT_PASSWORD"}
    try:
        by_file = subprocess.run([*base, "--password-file", str(secret)], capture_output=True, timeout=120,
                                 check=False, env=env)  # fmt: skip
        by_env = subprocess.run(base, capture_output=True, timeout=120, check=False,
                                env={**env, "MEMED_MQTT_PASSWORD": "right"})  # fmt: skip
        on_argv = subprocess.run([*base, "--password", "right"], capture_output=True, timeout=60, check=False)
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    for run in (by_file, by_env):
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        assert "published" in run.stdout.decode()
    assert on_argv.returncode == 2  # no such option: a password on the command line is visible to all


def test_a_corrupt_checkpoint_is_refused_or_moved_aside_on_request(
    tiny_registry: Path, tmp_path: Path
) -> None:
    from memed.errors import SnapshotError

    cfg = daemon_config(tiny_registry, "mqtt://127.0.0.1:1", tmp_path)
    ckpt = tmp_path / "ckpt.bin"
    ckpt.write_bytes(b"MEMEDCK2" + b"\x00" * 40)
    (tmp_path / "ckpt.bin.journal.00000003").write_bytes(b"")
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        Daemon(cfg)
    aside = msgspec.structs.replace(
        cfg, daemon=msgspec.structs.replace(cfg.daemon, corrupt_checkpoint="move_aside")
    )
    daemon = Daemon(aside)  # starts afresh
    asyncio.run(daemon.close())
    assert not ckpt.exists()
    moved = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert [n.split(".corrupt-")[0] for n in moved] == ["ckpt.bin", "ckpt.bin.journal.00000003"]
    assert daemon.path.tokens == 0


@pytest.mark.broker
async def test_minutes_no_token_ticked_in_are_counted_and_warned_about(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The feed stops for five minutes (every token): counted in memed_minutes_missing_total, and the
    signals still equal the decision path run directly on the same bars."""
    market = synth_market(3, 90, seed=4)
    start = market["ts"].min()
    hole = (pl.col("ts") >= start + timedelta(minutes=40)) & (pl.col("ts") < start + timedelta(minutes=45))
    market = market.filter(~hole)
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path, queue_minutes=100_000)
    daemon = Daemon(cfg)
    await serve_market(daemon, market, mosquitto.url)
    assert daemon.metrics.minutes_missing._value.get() == 5  # type: ignore[attr-defined]
    assert daemon.metrics.recovery_gap._value.get() == 0  # type: ignore[attr-defined]
    assert "memed_minutes_missing_total 5.0" in daemon.metrics.render().decode()
    assert_same_signals(read_jsonl(tmp_path / "signals.jsonl"), direct_signals(market, cfg, tiny_registry))


def test_the_feed_interval_check_tells_a_sparse_feed_from_another_interval() -> None:
    from memed.daemon.interval import FeedIntervalCheck, FeedIntervalError

    sparse = FeedIntervalCheck(1, "set")  # a 1-minute feed whose tokens skip silent minutes
    rng = np.random.default_rng(0)
    minute = 1000
    last = np.full(20, np.nan)
    while not sparse.done:
        minute += 1
        ticking = rng.random(20) < 0.4
        sparse.observe(minute, last[ticking])
        last[ticking] = minute
    hourly = FeedIntervalCheck(1, "set-1m")
    for hour in range(1, 20):  # 95 steps: not yet judged
        hourly.observe(hour * 60, np.full(5, (hour - 1) * 60.0))
    with pytest.raises(FeedIntervalError, match="60 minute"):
        hourly.observe(20 * 60, np.full(5, 19 * 60.0))


@pytest.mark.broker
async def test_a_one_minute_set_fed_hourly_bars_exits_2(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    from memed.daemon.interval import FeedIntervalError
    from memed.daemon.publish_dataset import publish_dataset

    market = synth_market(5, 60 * 30, seed=2).filter(pl.col("ts").dt.minute() == 0)  # hourly bars
    daemon = Daemon(daemon_config(tiny_registry, mosquitto.url, tmp_path))
    run = asyncio.create_task(daemon.run())
    await waited(daemon.subscribed, "the daemon to subscribe")
    await publish_dataset(market, mosquitto.url, batch=True)
    with pytest.raises(FeedIntervalError, match=r"60 minute\(s\) apart .* for 1-minute bars"):
        async with asyncio.timeout(120):
            await run


def test_the_gc_policy_freezes_each_minute_and_collects_fully_only_when_idle() -> None:
    """A full collection stalls the event loop: never while a later minute is half received."""
    import gc

    from memed.daemon.gc_policy import GcPolicy

    policy = GcPolicy(True, full_every_minutes=3)
    full: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(seen)
    try:
        policy.started()
        assert gc.get_freeze_count() > 0
        full.clear()
        for _ in range(5):  # due after three minutes, but a later minute is always arriving
            policy.minute_done(idle=False)
        assert full == []
        policy.minute_done(idle=True)
        assert full == [1]
        policy.minute_done(idle=True)  # and then not again until three more minutes
        assert full == [1]
    finally:
        gc.callbacks.remove(seen)
        gc.unfreeze()
