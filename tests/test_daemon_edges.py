"""Validation at the edge, the minute batcher, malformed input against a live daemon (hypothesis), and
SIGTERM on a real `memed run` process."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import Mosquitto
from daemon_helpers import daemon_config, flat_tick, wait_until, waited
from memed.daemon.app import Daemon
from memed.daemon.batcher import MinuteBatcher
from memed.daemon.ticks import Rejected, Tick, decode_message

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
GOOD = {
    "token": "PEPE",
    "ts": 1_767_225_540,
    "close": 1.5,
    "open": 1.4,
    "high": 1.6,
    "low": 1.3,
    "volume": 10.0,
}


def _one(payload: Any) -> Tick | Rejected:
    items = decode_message(payload if isinstance(payload, bytes) else json.dumps(payload).encode(), NOW, 120)
    assert len(items) == 1
    return items[0]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t.pop("close"), "missing_field"),
        (lambda t: t.update(close=-1.0), "bad_price"),
        (lambda t: t.update(close=0.0), "bad_price"),
        (lambda t: t.update(close="NaN"), "bad_type"),
        (lambda t: t.update(high=1.0), "high_below_low"),
        (lambda t: t.update(close=1.7), "price_outside_range"),
        (lambda t: t.update(volume=-3), "bad_volume"),
        (lambda t: t.update(volume=10**400), "bad_volume"),  # a number too large for a float
        (lambda t: t.update(volume="3"), "bad_type"),
        (lambda t: t.update(liquidity=-1.0), "bad_optional"),
        (lambda t: t.update(surprise=1), "unknown_field"),
        (lambda t: t.update(ts=NOW + 3600), "future_ts"),
        (lambda t: t.update(ts="yesterday"), "bad_ts"),
        (lambda t: t.update(ts="2026-01-01T00:00:00"), "bad_ts"),  # no zone
        (lambda t: t.update(token=""), "bad_token"),
        (lambda t: t.update(token="a/b"), "bad_token"),
        (lambda t: t.update(token=5), "bad_type"),
        (lambda t: t.update(liquidity=math.inf), "malformed_json"),
    ],
)
def test_each_bad_tick_is_rejected_with_its_reason(mutate: Any, reason: str) -> None:
    tick = dict(GOOD)
    mutate(tick)
    try:
        body = json.dumps(tick, allow_nan=True).encode()
    except ValueError:
        body = b"{"
    got = _one(body)
    assert isinstance(got, Rejected)
    assert got.reason == reason


def test_good_ticks_decode_in_every_time_format_and_arrays() -> None:
    for ts in (1_767_225_540, 1_767_225_540_000, "2026-01-01T00:00:00Z", 1_767_225_559.9):
        got = _one({**GOOD, "ts": ts})
        assert isinstance(got, Tick)
    items = decode_message(json.dumps([GOOD, {**GOOD, "token": "X"}, {"bad": 1}]).encode(), NOW, 120)
    assert [type(i).__name__ for i in items] == ["Tick", "Tick", "Rejected"]
    price_only = _one({"token": "A", "ts": 1_767_225_540, "close": 2.0})
    assert isinstance(price_only, Tick)
    assert (price_only.open, price_only.high, price_only.volume) == (2.0, 2.0, 0.0)
    assert math.isnan(price_only.liquidity)


def test_batcher_conflates_counts_and_closes_in_order() -> None:
    t0 = 14 * 60.0  # wall clock after the minutes below ended (epoch seconds), as in a replay
    b = MinuteBatcher(wait_seconds=2.0)
    assert b.add(flat_tick("A", 10), t0 + 0.0) is None
    assert b.add(flat_tick("A", 10), t0 + 0.1) == "duplicate"
    assert b.add(flat_tick("A", 10, 2.0), t0 + 0.2) is None  # replaced: latest wins
    assert b.add(flat_tick("B", 10), t0 + 0.2) is None
    assert b.due(t0 + 1.0) == []  # nothing expected yet, wait not over
    assert b.add(flat_tick("A", 11), t0 + 1.5) is None  # one of two moved on: no majority, minute 10 waits
    assert b.due(t0 + 1.6) == []
    batches = b.due(t0 + 2.0)  # its wait is over
    assert [x.minute for x in batches] == [10]
    assert {t.token: t.close for t in batches[0].ticks} == {"A": 2.0, "B": 1.0}
    assert b.add(flat_tick("B", 10), t0 + 1.7) == "late"
    assert b.add(flat_tick("A", 9), t0 + 1.7) == "late"
    assert b.add(flat_tick("B", 11), t0 + 1.8) is None  # all expected tokens of minute 11: closes at once
    assert [x.minute for x in b.due(t0 + 1.8)] == [11]
    assert b.add(flat_tick("C", 13), t0 + 2.0) is None
    assert b.add(flat_tick("C", 12), t0 + 2.0) == "out_of_order"
    assert b.due(t0 + 3.0) == []
    assert [x.minute for x in b.due(t0 + 4.1)] == [13]  # wait elapsed
    assert b.counts == {"duplicate": 1, "replaced": 1, "late": 2, "out_of_order": 1}


# --------------------------------------------------------------------------- malformed input, live
def _bad_ticks() -> st.SearchStrategy[tuple[bytes, str]]:
    base = st.fixed_dictionaries({"token": st.text("abcXYZ", min_size=1, max_size=6),
                                  "ts": st.integers(1_700_000_000, 1_760_000_000),
                                  "close": st.floats(1e-9, 1e6)})  # fmt: skip
    junk = st.binary(max_size=40).filter(lambda b: not _is_json(b)).map(lambda b: (b, "malformed_json"))
    negative = base.flatmap(lambda t: st.floats(max_value=0.0, allow_nan=False, allow_infinity=False).map(
        lambda c: (json.dumps({**t, "close": c}).encode(), "bad_price")))  # fmt: skip
    unknown = base.flatmap(lambda t: st.text("qwe", min_size=1, max_size=4).map(
        lambda k: (json.dumps({**t, f"x_{k}": 1}).encode(), "unknown_field")))  # fmt: skip
    missing = base.flatmap(lambda t: st.sampled_from(["token", "ts", "close"]).map(
        lambda k: (json.dumps({x: v for x, v in t.items() if x != k}).encode(), "missing_field")
    ))  # fmt: skip
    wrong = base.map(lambda t: (json.dumps({**t, "close": str(t["close"])}).encode(), "bad_type"))
    return st.one_of(junk, negative, unknown, missing, wrong)


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except ValueError:
        return False
    return True


@pytest.mark.broker
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(_bad_ticks(), min_size=5, max_size=40))
def test_malformed_messages_are_counted_and_the_daemon_keeps_serving(
    bad: list[tuple[bytes, str]],
    tiny_registry: Path,
    mosquitto: Mosquitto,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("malformed")
    asyncio.run(_malformed(bad, daemon_config(tiny_registry, mosquitto.url, tmp), mosquitto))


async def _malformed(bad: list[tuple[bytes, str]], cfg: Any, mosquitto: Mosquitto) -> None:
    daemon = Daemon(cfg)
    dead_letters: list[bytes] = []
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        await waited(daemon.subscribed, "the daemon to subscribe")
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe("memed/deadletter", qos=0)

            async def listen() -> None:
                async for m in client.messages:
                    dead_letters.append(bytes(m.payload))  # type: ignore[arg-type]

            listener = tg.create_task(listen())
            for body, _ in bad:
                await client.publish("memed/ticks/x", body, qos=1)
            good = {**GOOD, "ts": (int(time.time()) // 60 - 1) * 60}  # the last complete minute
            await client.publish("memed/ticks/x", json.dumps(good).encode(), qos=1)
            await wait_until(lambda: "PEPE" in daemon.latest, timeout=20)
            await wait_until(lambda: len(dead_letters) >= len(bad), timeout=20)
            listener.cancel()
        daemon.stop()
        await run
    counts = daemon.metrics.rejected_counts()
    want: dict[str, float] = {}
    for _, reason in bad:
        want[reason] = want.get(reason, 0) + 1
    assert counts == want
    assert sorted(json.loads(d)["reason"] for d in dead_letters) == sorted(r for _, r in bad)


# --------------------------------------------------------------------------- a real process
@pytest.mark.broker
def test_memed_run_drains_and_checkpoints_on_sigterm(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    cfg = daemon_config(tiny_registry, mosquitto.url, tmp_path)
    from memed.config import to_toml

    conf = tmp_path / "run.toml"
    conf.write_text(to_toml(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "memed.cli", "run", "--config", str(conf)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)  # fmt: skip
    assert proc.stderr is not None
    try:  # a failing assertion must not leave a daemon running
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline().decode()
            lines.append(line)
            if "broker_connected" in line:
                break
        assert any("broker_connected" in line for line in lines), lines
        # SIGUSR1: where every task waits and what every thread runs, in the log; the daemon goes on
        proc.send_signal(signal.SIGUSR1)
        while time.monotonic() < deadline and '"event": "stacks"' not in (
            line := proc.stderr.readline().decode()
        ):
            pass
        stacks = json.loads(line)["stacks"]
        for where in ("task mqtt:", "task batches:", "in _batch_loop", "thread MainThread:"):
            assert where in stacks, stacks
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "checkpoint_written" in err.decode()
    assert (tmp_path / "ckpt.bin").exists()


async def test_a_stop_that_comes_with_a_tick_still_ends_the_batch_loop(
    tiny_registry: Path, tmp_path: Path
) -> None:
    """The batch loop waits for a tick or the clock's next look. A cancel (the stop) in the same loop turn
    as a tick must end it: Python 3.11's ``wait_for`` returned the tick instead, the loop went on, and a
    SIGTERM during a busy feed left the daemon running forever (the kill test's hang on CI)."""
    daemon = Daemon(daemon_config(tiny_registry, "mqtt://127.0.0.1:9", tmp_path))
    try:
        for _ in range(20):
            loop = asyncio.create_task(daemon._batch_loop())
            await asyncio.sleep(0.002)  # it waits for a tick
            daemon._arrived.set()
            loop.cancel()
            await asyncio.wait({loop}, timeout=5)
            assert loop.cancelled()
    finally:
        await daemon.close()


def test_shipped_demo_model_set_matches_the_running_feature_engine() -> None:
    from memed.daemon.demo import DEMO_MODELS
    from memed.features import build_spec
    from memed.models.registry import load_model_set

    ms = load_model_set(DEMO_MODELS)
    spec = build_spec(ms.manifest.interval_minutes, ms.manifest.gap_fill_max_minutes)
    assert ms.manifest.feature_spec_hash == spec.hash, (
        "the kernel changed: regenerate the demo models with the command in their manifest"
    )
    assert ms.manifest.command.startswith("memed train")


def test_memed_demo_runs_end_to_end_without_external_services(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "memed.cli", "demo", "--minutes", "40", "--speed", "0",
         "--data-root", str(tmp_path)],
        capture_output=True, text=True, timeout=180, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "synthetic market" in res.stdout
    assert "served 40 minutes" in res.stdout


NO_TRAINING_STACK = """
import sys
for name in ("torch", "lightgbm", "xgboost", "onnx", "onnxmltools", "skl2onnx", "sklearn", "scipy"):
    sys.modules[name] = None  # any import of them raises ImportError
import numpy as np
from memed.config import MemedConfig
from memed.daemon.app import Daemon
from memed.daemon.demo import DEMO_MODELS
from memed.daemon.ticks import decode_message
from memed.daemon.batcher import MinuteBatcher
from memed.daemon.wire import to_signals
import msgspec
cfg = MemedConfig()
cfg = msgspec.structs.replace(cfg, daemon=msgspec.structs.replace(cfg.daemon, registry=str(DEMO_MODELS)))
daemon = Daemon(cfg)
b = MinuteBatcher(0.0)
for k in range(3):
    ts = 1_767_225_600 + 60 * k
    ticks = [{"token": f"T{i}", "ts": ts, "close": 1.0 + 0.01 * i + 0.001 * k} for i in range(5)]
    for t in decode_message(msgspec.json.encode(ticks), 1.8e9, 120):
        b.add(t, 0.0)
for batch in b.due(1.0, flush=True):
    sigs = to_signals(daemon.path.process(batch.tokens, float(batch.minute), batch.bars))
print(len(sigs), sigs[0].reason)
"""


def test_the_daemon_runs_without_the_training_stack(tmp_path: Path) -> None:
    res = subprocess.run(  # in a scratch folder: the default checkpoint and journal go to the cwd
        [sys.executable, "-c", NO_TRAINING_STACK], capture_output=True, text=True, timeout=120, check=False,
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["5", "warming_up"]


SERVING_ONLY_BACKTEST = """
import sys
for name in ("torch", "lightgbm", "xgboost", "scipy", "sklearn", "amqtt"):
    sys.modules[name] = None  # what the base install lacks: any import of them raises ImportError
from memed.cli.main import main
sys.argv = ["memed", *sys.argv[1:]]
main()
"""


def test_memed_backtest_with_a_model_set_runs_on_the_serving_install(
    tiny_market: Path, tmp_path: Path
) -> None:
    from memed.daemon.demo import DEMO_MODELS

    cfg = tmp_path / "bt.toml"
    cfg.write_text("[backtest]\ntrain_minutes = 300\ntest_minutes = 200\nstep_minutes = 200\nmax_folds = 1\n")
    out = tmp_path / "out"
    args = ["backtest", "--data", str(tiny_market), "--models", str(DEMO_MODELS), "--config", str(cfg),
            "--out", str(out), "--allow-in-sample"]  # fmt: skip
    res = subprocess.run([sys.executable, "-c", SERVING_ONLY_BACKTEST, *args], capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["token_minutes_replayed"] > 1000
    assert (out / "signals.parquet").exists()
