"""The feed adapters run over their recorded payloads (tests/fixtures/feeds), and the golden files of
what they produce. ``python tests/feed_goldens.py --write`` rewrites the goldens (review the diff)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from memed.feeds import binance, birdeye, dexscreener, geckoterminal, pumpportal
from memed.feeds.ticks import FeedTick
from memed.feeds.trades import TradeBars

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
NOW = 1_767_225_665.0
"""When the recordings are replayed: 5 s into minute 1767225660 (2026-01-01 00:01:05 UTC)."""


def _json(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def _lines(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def binance_ws() -> list[FeedTick]:
    return [t for msg in _lines("binance_kline_ws.jsonl") for t in binance.kline_event(msg)]


def binance_rest() -> list[FeedTick]:
    return binance.rest_klines("1000PEPEUSDT", _json("binance_klines_rest.json"), now_ms=1_767_225_630_000)


def gecko() -> list[FeedTick]:
    return geckoterminal.ohlcv(_json("geckoterminal_ohlcv.json"), NOW)  # type: ignore[arg-type]


def birdeye_() -> list[FeedTick]:
    return birdeye.ohlcv(_json("birdeye_ohlcv.json"), NOW)  # type: ignore[arg-type]


def pump() -> list[FeedTick]:
    bars = TradeBars(grace_seconds=2.0)
    out: list[FeedTick] = []
    for rec in _lines("pumpportal_trades.jsonl"):
        arrived = float(rec["arrived"])  # type: ignore[arg-type]
        out += bars.close(arrived)
        trade = pumpportal.trade(rec["msg"], arrived)  # type: ignore[arg-type]
        if trade is not None:
            bars.add(trade)
    return out + bars.close(NOW)


def dex_enriched() -> list[FeedTick]:
    return dexscreener.enrich(gecko() + pump(), _json("dexscreener_pairs.json"))


def dex_snapshot() -> list[FeedTick]:
    return dexscreener.snapshot_ticks(_json("dexscreener_pairs.json"), NOW)


RUNS: dict[str, Callable[[], list[FeedTick]]] = {
    "binance_ws": binance_ws,
    "binance_rest": binance_rest,
    "geckoterminal": gecko,
    "birdeye": birdeye_,
    "pumpportal": pump,
    "dexscreener_enriched": dex_enriched,
    "dexscreener_snapshot": dex_snapshot,
}


def golden(name: str) -> Path:
    return FIXTURES / f"{name}.ticks.json"


if __name__ == "__main__" and "--write" in sys.argv:
    for name, run in RUNS.items():
        golden(name).write_bytes(msgspec.json.format(msgspec.json.encode(run()), indent=1) + b"\n")
        print("wrote", golden(name))
