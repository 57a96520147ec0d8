"""``memed demo``: the whole serving path on embedded defaults, with no external service.

An embedded MQTT broker (amqtt) on a free loopback port, the model set shipped in the package (made by
``memed train``; its manifest records the command), a real dataset from ``../shared/data`` replayed at
high speed (a synthetic market when that folder is absent), the daemon, and a live console table of the
latest signal per token. It ends when the replay has been served, or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
from rich.console import Console
from rich.live import Live
from rich.table import Table

from memed.config import MemedConfig
from memed.daemon.app import Daemon
from memed.daemon.publish_dataset import publish_dataset
from memed.errors import ConfigError
from memed.logs import get_logger

log = get_logger("memed.demo")
DEMO_MODELS = Path(__file__).resolve().parent.parent / "demo_models"
_STYLE = {"STRONG_BUY": "bold green", "BUY": "green", "HOLD": "dim", "SELL": "red", "STRONG_SELL": "bold red"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_broker(port: int) -> Any:
    try:
        from amqtt.broker import Broker  # noqa: PLC0415 - only the demo needs an embedded broker
    except ImportError as exc:
        raise ConfigError(f"memed demo needs the 'demo' extra (pip install 'memed[demo]'): {exc}") from None

    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.ERROR)
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},
        "topic-check": {"enabled": False},
    })  # fmt: skip
    await broker.start()
    return broker


def _table(daemon: Daemon, title: str) -> Table:
    table = Table(title=title, expand=False)
    for col in ("token", "minute (event time)", "action", "side", "p_up", "stop", "take", "size", "reason"):
        table.add_column(col)
    for token in sorted(daemon.latest)[:40]:
        s = daemon.latest[token]
        r = s.risk
        table.add_row(
            token, s.ts, f"[{_STYLE.get(s.action, '')}]{s.action}[/]", s.side,
            "" if s.p_up is None else f"{s.p_up:.3f}",
            "" if r is None else f"{r.stop_loss:.6g}", "" if r is None else f"{r.take_profit:.6g}",
            "" if r is None else f"{r.position_size:.4g}", s.reason,
        )  # fmt: skip
    return table


async def run_demo(cfg: MemedConfig, market: pl.DataFrame, *, speed: float, console: Console) -> Daemon:
    port = _free_port()
    broker = await _start_broker(port)
    work = Path(tempfile.mkdtemp(prefix="memed-demo-"))
    daemon_cfg = msgspec.structs.replace(
        cfg.daemon,
        registry=str(cfg.daemon.registry if Path(cfg.daemon.registry).exists() else DEMO_MODELS),
        broker_url=f"mqtt://127.0.0.1:{port}",
        checkpoint_path=str(work / "checkpoint.bin"),
        batch_wait_seconds=0.5,
        client_id="memed-demo",
        http_port=_free_port(),
    )
    daemon = Daemon(msgspec.structs.replace(cfg, daemon=daemon_cfg))
    last_minute = int(market["ts"].max().timestamp() // 60)  # type: ignore[union-attr]
    title = f"memed demo: model set {daemon.path.model_set.id} on {market['token'].n_unique()} tokens"
    try:
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(daemon.run(), name="daemon")
            await daemon.subscribed.wait()
            feed = tg.create_task(
                publish_dataset(market, daemon_cfg.broker_url, batch=True, speed=speed), name="feed"
            )
            with Live(_table(daemon, title), console=console, refresh_per_second=4) as live:
                while daemon.batcher.last_closed < last_minute or not feed.done():
                    await asyncio.sleep(0.25)
                    live.update(_table(daemon, title + f" | minutes served {daemon.processed_minutes}"))
            daemon.stop()
            await serving
    finally:
        await broker.shutdown()
    return daemon


def demo_market(data_root: Path, minutes: int) -> tuple[pl.DataFrame, str]:
    """The last ``minutes`` of the real 1-minute sets, or a synthetic market when they are absent."""
    from memed.data import load_dataset, synth_market  # noqa: PLC0415

    folders = [data_root / n for n in ("binance-futures-1m", "freqtrade-gaps") if (data_root / n).is_dir()]
    if folders:
        frame, _ = load_dataset(folders)
        start = frame["ts"].max() - pl.duration(minutes=minutes - 1)
        return frame.filter(pl.col("ts") >= start), ", ".join(str(f) for f in folders)
    return synth_market(20, minutes, seed=1), "a synthetic market (../shared/data not found)"
