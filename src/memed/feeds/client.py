"""``memed feed``: connect to a market-data source, turn its payloads into ticks with the pure adapters
of :mod:`memed.feeds`, and publish them onto MQTT (one JSON array per batch, QoS 1) for ``memed run``.

* Websocket sources (``binance``, ``pumpportal``) reconnect with capped jittered backoff; REST sources
  (``geckoterminal``, ``birdeye``, ``dexscreener``) are polled every ``poll_seconds`` per symbol, spaced
  to stay inside the source's rate limit, and each (token, minute) is published once.
* ``record``: every frame or response received is appended to a JSONL file (``{"arrived", "msg"}``)
  that ``replay`` feeds back instead of the network, at once (for tests and for bug reports).
* A payload of the wrong shape is counted and logged (``feed_payload_rejected``), never fatal.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from memed.daemon import mqtt
from memed.feeds import binance, birdeye, dexscreener, geckoterminal, pumpportal
from memed.feeds.ticks import FeedError, FeedTick, encode
from memed.feeds.trades import TradeBars
from memed.logs import get_logger

log = get_logger("memed.feed")

Source = Literal["binance", "geckoterminal", "birdeye", "pumpportal", "dexscreener"]
SOURCES: tuple[Source, ...] = ("binance", "geckoterminal", "birdeye", "pumpportal", "dexscreener")
BASE_URLS: dict[Source, str] = {
    "binance": "wss://stream.binance.com:9443",
    "geckoterminal": "https://api.geckoterminal.com/api/v2",
    "birdeye": "https://public-api.birdeye.so",
    "pumpportal": "wss://pumpportal.fun/api/data",
    "dexscreener": "https://api.dexscreener.com",
}
PAYLOAD_ERRORS = (FeedError, TypeError, AttributeError, KeyError, ValueError)
"""What the adapters raise on a payload that is not the source's documented shape."""
MIN_POLL_SECONDS: dict[Source, float] = {"geckoterminal": 2.0, "birdeye": 1.0, "dexscreener": 1.0}
"""Seconds between two requests at least: GeckoTerminal's free API takes 30 calls a minute, Birdeye's
and DexScreener's more."""


@dataclass
class FeedOptions:
    source: Source
    symbols: list[str]
    """binance: symbols (``1000PEPEUSDT``); geckoterminal: ``network:pool``; birdeye: token addresses;
    pumpportal: mints; dexscreener: ``chain:pair``."""
    base_url: str = ""
    poll_seconds: float = 20.0
    record: Path | None = None
    api_key: str = field(default="", repr=False)


@dataclass
class FeedStats:
    frames: int = 0
    ticks: int = 0
    published: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class Decoder:
    """Frames (or REST responses) of one source → ticks, keeping what the source needs between frames:
    the trade aggregator, and which (token, minute) a polled source has already given."""

    def __init__(self, source: Source, stats: FeedStats) -> None:
        self.source = source
        self.stats = stats
        self.trades = TradeBars()
        self._newest: dict[str, int] = {}

    def __call__(self, msg: Any, arrived: float, symbol: str = "") -> list[FeedTick]:
        self.stats.frames += 1
        try:
            ticks = self._decode(msg, arrived, symbol)
        except PAYLOAD_ERRORS as exc:  # not the documented shape
            self.stats.rejected["bad_payload"] += 1
            log.warning("feed_payload_rejected", source=self.source, error=str(exc)[:300])
            return []
        fresh = []
        snapshots = self.source == "dexscreener"  # a newer snapshot of the same minute replaces the last
        for t in ticks:  # a polled source repeats bars it gave before: each (token, minute) once
            newest = self._newest.get(t.token, -1)
            if t.ts > newest or (snapshots and t.ts == newest):
                self._newest[t.token] = t.ts
                fresh.append(t)
        self.stats.ticks += len(fresh)
        return fresh

    def _decode(self, msg: Any, arrived: float, symbol: str) -> list[FeedTick]:
        if self.source == "binance":
            return binance.kline_event(msg)
        if self.source == "geckoterminal":
            pool = symbol.split(":", 1)[-1] if symbol else None
            return geckoterminal.ohlcv(
                msg, arrived, token=None if isinstance(msg, dict) and msg.get("meta") else pool
            )
        if self.source == "birdeye":
            return birdeye.ohlcv(msg, arrived, token=symbol or None)
        if self.source == "dexscreener":
            return dexscreener.snapshot_ticks(msg, arrived)
        trade = pumpportal.trade(msg, arrived)
        if trade is not None and (reason := self.trades.add(trade)) is not None:
            self.stats.rejected[reason] += 1
        return self.trades.close(arrived)

    def flush(self, now: float) -> list[FeedTick]:
        """Bars a trade feed has closed by ``now`` (nothing for bar sources)."""
        if self.source != "pumpportal":
            return []
        ticks = self.trades.close(now)
        self.stats.ticks += len(ticks)
        return ticks


def _record(path: Path | None, arrived: float, msg: Any, symbol: str = "") -> None:
    if path is not None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"arrived": arrived, "symbol": symbol, "msg": msg}) + "\n")


async def _websocket(opts: FeedOptions, base: str) -> AsyncIterator[tuple[float, Any, str]]:
    """Frames from a websocket source, reconnecting with backoff forever."""
    if opts.source == "binance":
        streams = "/".join(f"{s.lower()}@kline_1m" for s in opts.symbols)
        url, subscribe = f"{base.rstrip('/')}/stream?streams={streams}", None
    else:
        url, subscribe = base, {"method": "subscribeTokenTrade", "keys": opts.symbols}
    backoff = 0.5
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.ws_connect(url, heartbeat=30) as ws:
                    log.info("feed_connected", source=opts.source, url=url)
                    backoff = 0.5
                    if subscribe is not None:
                        await ws.send_json(subscribe)
                    async for frame in ws:
                        if frame.type != aiohttp.WSMsgType.TEXT:
                            break
                        try:
                            yield time.time(), json.loads(frame.data), ""
                        except json.JSONDecodeError:
                            yield time.time(), None, ""
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning(
                    "feed_lost", source=opts.source, error=str(exc) or type(exc).__name__, retry_in=backoff
                )
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 30.0)


def _rest_url(opts: FeedOptions, base: str, symbol: str) -> str:
    base = base.rstrip("/")
    if opts.source == "geckoterminal":
        network, pool = symbol.split(":", 1)
        return f"{base}/networks/{network}/pools/{pool}/ohlcv/minute?aggregate=1&limit=100"
    if opts.source == "birdeye":
        now = int(time.time())
        return f"{base}/defi/ohlcv?address={symbol}&type=1m&time_from={now - 6000}&time_to={now}"
    chain, pair = symbol.split(":", 1)
    return f"{base}/latest/dex/pairs/{chain}/{pair}"


async def _poll(opts: FeedOptions, base: str) -> AsyncIterator[tuple[float, Any, str]]:
    """Responses from a REST source, every symbol each ``poll_seconds``, requests spaced by the rate limit."""
    headers = {"accept": "application/json"}
    if opts.source == "birdeye":
        headers["X-API-KEY"] = opts.api_key
    gap = max(MIN_POLL_SECONDS[opts.source], opts.poll_seconds / max(1, len(opts.symbols)))
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=20)) as session:
        while True:
            for symbol in opts.symbols:
                try:
                    async with session.get(_rest_url(opts, base, symbol)) as resp:
                        if resp.status == 429:  # noqa: PLR2004 - rate limited: wait longer
                            log.warning("feed_rate_limited", source=opts.source, symbol=symbol)
                            await asyncio.sleep(gap * 4)
                            continue
                        body = await resp.json(content_type=None)
                        yield time.time(), body, symbol
                except (aiohttp.ClientError, OSError, TimeoutError, json.JSONDecodeError) as exc:
                    log.warning("feed_request_failed", source=opts.source, symbol=symbol,
                                error=str(exc) or type(exc).__name__)  # fmt: skip
                await asyncio.sleep(gap)


async def _replayed(path: Path) -> AsyncIterator[tuple[float, Any, str]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            yield float(rec["arrived"]), rec["msg"], str(rec.get("symbol", ""))


def frames(opts: FeedOptions, replay: Path | None = None) -> AsyncIterator[tuple[float, Any, str]]:
    if replay is not None:
        return _replayed(replay)
    base = opts.base_url or BASE_URLS[opts.source]
    return _websocket(opts, base) if opts.source in ("binance", "pumpportal") else _poll(opts, base)


async def run_feed(opts: FeedOptions, broker_url: str, *, topic: str = "memed/ticks/feed",
                   replay: Path | None = None, username: str | None = None, password: str | None = None,
                   ca_file: str | None = None, on_publish: Callable[[int], None] | None = None,
                   ) -> FeedStats:  # fmt: skip
    """Run until the frames end (a replay) or the task is cancelled; returns the counts."""
    host, port, tls = mqtt.broker_address(broker_url)
    stats = FeedStats()
    decode = Decoder(opts.source, stats)
    async with mqtt.client(
        host, port, username=username, password=password, tls=tls, ca_file=ca_file
    ) as client:

        async def publish(ticks: list[FeedTick]) -> None:
            if ticks:
                await client.publish(topic, encode(ticks), qos=1)
                stats.published += len(ticks)
                if on_publish is not None:
                    on_publish(stats.published)

        last = 0.0
        async for arrived, msg, symbol in frames(opts, replay):
            _record(opts.record, arrived, msg, symbol)
            last = arrived
            await publish(decode(msg, arrived, symbol) if msg is not None else [])
        await publish(decode.flush(last + 120.0) if replay is not None else [])  # a replay's last bars
    log.info("feed_done", source=opts.source, frames=stats.frames, ticks=stats.ticks,
             published=stats.published, rejected=dict(stats.rejected))  # fmt: skip
    return stats


def api_key_from_env(source: Source) -> str:
    return os.environ.get("MEMED_BIRDEYE_API_KEY", "") if source == "birdeye" else ""
