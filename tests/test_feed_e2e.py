"""``memed feed`` end to end, with no internet: a local aiohttp server plays Binance's kline websocket
and GeckoTerminal's OHLCV REST API with bars of a market, the feed publishes them onto a real Mosquitto,
and a real daemon serves the same signals as the decision path run directly on those bars (what
``memed replay`` of the same bars gives, as the daemon tests show)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import polars as pl
import pytest
from aiohttp import web

from broker import Mosquitto
from daemon_helpers import (
    assert_same_signals,
    daemon_config,
    direct_signals,
    last_minute,
    read_jsonl,
    serve_app,
    wait_until,
    waited,
)
from memed.daemon.app import Daemon
from memed.data import synth_market
from memed.feeds.client import FeedOptions, run_feed

pytestmark = pytest.mark.broker
OHLCV = ("open", "high", "low", "close", "volume")


def kline_events(market: pl.DataFrame) -> list[dict[str, object]]:
    """Each bar as Binance sends it: a forming update (x false), then the final one (x true)."""
    out = []
    for row in market.sort("ts", "token").iter_rows(named=True):
        t = int(row["ts"].timestamp() * 1000)
        prices = {f: str(row[name]) for f, name in zip("ohlcv", OHLCV, strict=True)}
        k = {"t": t, "T": t + 59_999, "s": row["token"], "i": "1m", "n": 10, **prices}
        stream = f"{row['token'].lower()}@kline_1m"
        forming = {**k, "c": str(row["open"]), "x": False}
        out.append(
            {"stream": stream, "data": {"e": "kline", "E": t + 30_000, "s": row["token"], "k": forming}}
        )
        out.append(
            {
                "stream": stream,
                "data": {"e": "kline", "E": t + 60_000, "s": row["token"], "k": {**k, "x": True}},
            }
        )
    return out


async def feed_and_serve(market: pl.DataFrame, cfg_dir: Path, registry: Path, broker: Mosquitto,
                         start_feed: Callable[[], Awaitable[object]]) -> Daemon:  # fmt: skip
    cfg = daemon_config(registry, broker.url, cfg_dir, close_on_expected=False, wait_seconds=1.0)
    daemon = Daemon(cfg)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        await waited(daemon.subscribed, "the daemon to subscribe")
        feed = tg.create_task(start_feed())
        await wait_until(lambda: daemon.batcher.last_closed >= last_minute(market), timeout=120)
        feed.cancel()
        daemon.stop()
        await run
    assert "late" not in daemon.metrics.rejected_counts()
    assert_same_signals(read_jsonl(cfg_dir / "signals.jsonl"), direct_signals(market, cfg, registry))
    return daemon


async def test_binance_websocket_to_signals(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    market = synth_market(3, 150, seed=8)
    events = kline_events(market)
    subscribed: list[str] = []

    async def stream(request: web.Request) -> web.WebSocketResponse:
        subscribed.append(request.query["streams"])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for e in events:
            await ws.send_json(e)
        await asyncio.sleep(3600)  # stays open, as Binance does
        return ws

    runner, port = await serve_app(lambda app: app.router.add_get("/stream", stream))
    tokens = sorted(market["token"].unique().to_list())
    opts = FeedOptions(
        "binance", tokens, base_url=f"ws://127.0.0.1:{port}", record=tmp_path / "capture.jsonl"
    )
    await feed_and_serve(market, tmp_path, tiny_registry, mosquitto, lambda: run_feed(opts, mosquitto.url))
    await runner.cleanup()
    assert subscribed == ["/".join(f"{t.lower()}@kline_1m" for t in tokens)]
    # the capture replays to the same ticks, with no network
    assert len((tmp_path / "capture.jsonl").read_text().splitlines()) == len(events)


async def test_geckoterminal_rest_to_signals(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    market = synth_market(1, 150, seed=3)
    token = market["token"][0]
    rows = [[int(r["ts"].timestamp()), r["open"], r["high"], r["low"], r["close"], r["volume"]]
            for r in market.sort("ts", descending=True).iter_rows(named=True)]  # fmt: skip
    polls: list[str] = []

    async def ohlcv(request: web.Request) -> web.Response:
        polls.append(request.match_info["pool"])
        doc = {"data": {"attributes": {"ohlcv_list": rows}}, "meta": {"base": {"address": token}}}
        return web.json_response(doc)

    runner, port = await serve_app(
        lambda app: app.router.add_get("/networks/{network}/pools/{pool}/ohlcv/minute", ohlcv)
    )
    opts = FeedOptions(
        "geckoterminal", [f"solana:POOL{token}"], base_url=f"http://127.0.0.1:{port}", poll_seconds=0.5
    )
    stats: list[object] = []

    async def go() -> None:
        stats.append(await run_feed(opts, mosquitto.url))

    await feed_and_serve(market, tmp_path, tiny_registry, mosquitto, go)
    await runner.cleanup()
    assert polls
    assert set(polls) == {f"POOL{token}"}
