"""Helpers for the daemon tests: configs, the direct decision path, signal collection."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import numpy as np
import polars as pl
from aiohttp import web

from broker import free_port
from conftest import TINY_TOML
from memed.config import MemedConfig, parse_config
from memed.daemon.ticks import Tick
from memed.daemon.wire import to_signals
from memed.data.frames import bar_matrix, epoch_minutes, run_bounds
from memed.decision import DecisionPath
from memed.models.registry import load_model_set


def daemon_config(
    registry: Path,
    broker_url: str,
    tmp: Path,
    extra: str = "",
    *,
    close_on_expected: bool = True,
    wait_seconds: float = 0.3,
    queue_minutes: int = 120,
    policy: str = "cost_aware",
) -> MemedConfig:
    return parse_config(
        TINY_TOML
        + f"""
[signals]
policy = "{policy}"
models = ["logreg", "lgbm", "xgb", "lstm", "transformer"]
decision_horizons = [30, 60]
[daemon]
registry = "{registry}"
broker_url = "{broker_url}"
client_id = "memed-test-{tmp.name}"
batch_wait_seconds = {wait_seconds}
sink_queue_minutes = {queue_minutes}
http_port = {free_port()}
checkpoint_path = "{tmp / "ckpt.bin"}"
jsonl_path = "{tmp / "signals.jsonl"}"
reload_poll_seconds = 0.2
publish_hold = "always"
close_on_expected = {"true" if close_on_expected else "false"}
"""
        + extra
    )


def flat_tick(token: str, minute: int, close: float = 1.0) -> Tick:
    """A tick whose bar is flat at ``close`` (volume 1, no flow, liquidity or market cap)."""
    nan = float("nan")
    return Tick(token, minute, close, close, close, close, 1.0, nan, nan, nan, nan)


def direct_signals(
    market: pl.DataFrame, cfg: MemedConfig, registry: Path
) -> dict[tuple[str, str], dict[str, Any]]:
    """The decision path run directly, minute by minute, on the same bars."""
    path = DecisionPath(load_model_set(registry), cfg.signals, cfg.risk)
    bars = market.sort("ts", "token")
    ts = epoch_minutes(bars["ts"])
    x = bar_matrix(bars)
    tokens = bars["token"].to_list()
    bounds = run_bounds(ts)
    out = {}
    for a, b in itertools.pairwise(bounds):
        for sig in to_signals(path.process(tokens[a:b], float(ts[a]), np.ascontiguousarray(x[:, a:b]))):
            out[(sig.token, sig.ts)] = msgspec.to_builtins(sig)
    return out


def read_jsonl(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            doc = msgspec.json.decode(line)
            out[(doc["token"], doc["ts"])] = doc
    return out


def assert_same_signals(
    got: dict[tuple[str, str], dict[str, Any]], want: dict[tuple[str, str], dict[str, Any]]
) -> None:
    assert got.keys() == want.keys(), (len(got), len(want), sorted(want.keys() - got.keys())[:5])
    for key, w in want.items():
        g = got[key]
        assert g["action"] == w["action"], key
        assert g["reason"] == w["reason"], key
        assert g["key"] == w["key"]
        for field in ("p_up", "strength"):
            if w[field] is None:
                assert g[field] is None, key
            else:
                assert abs(g[field] - w[field]) <= 1e-9, (key, field)
        if w["risk"] is None:
            assert g["risk"] is None, key
        else:
            for k, v in w["risk"].items():
                assert (
                    g["risk"][k] == v
                    if isinstance(v, str)
                    else abs(g["risk"][k] - v) <= 1e-9 * max(1, abs(v))
                )


def last_minute(frame: pl.DataFrame) -> int:
    """Epoch minute of a frame's last bar."""
    return int(frame["ts"].max().timestamp() // 60)  # type: ignore[union-attr]


def signal_minute(ts: str) -> int:
    """Epoch minute of a signal's ``ts`` (ISO 8601, ``Z``)."""
    return int(np.datetime64(ts[:-1], "m").astype(np.int64))


async def serve_market(daemon: Any, market: pl.DataFrame, broker_url: str, *, columns: bool = False) -> None:
    """Run ``daemon``, publish ``market`` (one array per minute, or one column batch with ``columns``),
    wait until its last minute has closed, stop it."""
    from memed.daemon.publish_dataset import publish_dataset

    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        await waited(daemon.subscribed, "the daemon to subscribe")
        await publish_dataset(market, broker_url, batch=True, columns=columns)
        last = last_minute(market)
        await wait_until(lambda: daemon.batcher.last_closed >= last, timeout=120)
        daemon.stop()
        await run


async def waited(event: asyncio.Event, what: str, timeout: float = 60.0) -> None:
    """``event.wait()``, bounded: a broker that never answers fails the test, naming ``what``, instead
    of hanging it."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        raise AssertionError(f"waited {timeout:g} s for {what}") from None


async def wait_until(cond: Any, timeout: float = 30.0, interval: float = 0.05) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(interval)


async def collect(url_port: int, topic: str, into: list[bytes], ready: asyncio.Event,
                  session: str | None = None) -> None:  # fmt: skip
    """Subscribe to ``topic`` and collect every payload into ``into`` (``ready`` set once subscribed);
    ``session``: a persistent session under that client id (what the broker queued for it while it was
    away arrives after a reconnect), else a clean one."""
    async with aiomqtt.Client("127.0.0.1", url_port, identifier=session, clean_session=session is None
                              ) as client:  # fmt: skip
        await client.subscribe(topic, qos=1)
        ready.set()
        async for message in client.messages:
            into.append(bytes(message.payload))  # type: ignore[arg-type]


async def serve_app(routes: Callable[[web.Application], None]) -> tuple[web.AppRunner, int]:
    """A real aiohttp server on a free loopback port with the routes ``routes`` adds; (runner, port)."""
    app = web.Application()
    routes(app)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def serve_webhook(handler: Any) -> tuple[web.AppRunner, int]:
    """A real HTTP server on a free loopback port, POST /hook answered by ``handler``."""
    return await serve_app(lambda app: app.router.add_post("/hook", handler))


async def exit_code(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> int:
    """The daemon process's exit code; one that has not ended within ``timeout`` fails the test with
    where it is: its own stack dump (SIGUSR1, written to its log) and, where py-spy is installed, its
    threads as py-spy sees them (a blocked event loop cannot answer the signal)."""
    try:
        return await asyncio.to_thread(proc.wait, timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(3.0)
        spy = shutil.which("py-spy")
        threads = (subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True,
                                  timeout=30, check=False).stdout if spy else "")  # fmt: skip
        lines = log.read_text().splitlines()
        dumps = [msgspec.json.decode(x)["stacks"] for x in lines if '"event": "stacks"' in x]
        raise AssertionError(
            f"the daemon did not end within {timeout:g} s\n--- its log ---\n"
            + "\n".join(lines[-30:])
            + f"\n--- its stacks ---\n{dumps[-1] if dumps else '(none)'}\n--- py-spy ---\n{threads}"
        ) from None
