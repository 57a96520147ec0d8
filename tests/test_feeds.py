"""Feed adapters on recorded payloads (written from each source's documented shape): their ticks equal
the golden files, keep each source's rules (final klines only, forming bars dropped, newest-first lists
sorted, trades deduplicated and late ones dropped), and pass memed's own tick parser whole."""

from __future__ import annotations

import json

import msgspec
import pytest

from feed_goldens import FIXTURES, NOW, RUNS, golden
from memed.daemon.ticks import Rejected, decode_message
from memed.feeds import binance, birdeye, dexscreener, geckoterminal, pumpportal
from memed.feeds.ticks import FeedError, FeedTick, encode
from memed.feeds.trades import Trade, TradeBars


@pytest.mark.parametrize("name", sorted(RUNS))
def test_adapters_match_their_golden_files_and_memeds_parser(name: str) -> None:
    ticks = RUNS[name]()
    want = msgspec.json.decode(golden(name).read_bytes(), type=list[FeedTick])
    assert ticks == want
    assert ticks
    decoded = decode_message(encode(ticks), NOW + 60, 120)
    assert not [d for d in decoded if isinstance(d, Rejected)]
    assert len(decoded) == len(ticks)
    assert all(t.ts % 60 == 0 for t in ticks)


def test_each_source_keeps_its_rules() -> None:
    ws = RUNS["binance_ws"]()
    assert [(t.token, t.ts) for t in ws] == [
        ("1000PEPEUSDT", 1_767_225_540), ("1000SHIBUSDT", 1_767_225_540), ("1000PEPEUSDT", 1_767_225_600)
    ]  # fmt: skip  # the x=false event of minute 1767225600 is not a bar; the final one is
    assert ws[0].close == 0.007129  # numbers sent as strings
    assert [t.ts for t in RUNS["binance_rest"]()] == [
        1_767_225_480,
        1_767_225_540,
    ]  # the forming row left out
    gecko = RUNS["geckoterminal"]()
    assert [t.ts for t in gecko] == [1_767_225_420, 1_767_225_480, 1_767_225_600]  # sorted, forming dropped
    assert gecko[0].token == "7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr"  # meta.base.address
    pump = RUNS["pumpportal"]()
    first = pump[0]
    assert (first.buys, first.sells) == (2.0, 1.0)  # the resent sig222 counted once
    assert first.volume == pytest.approx(0.1 + 0.5 + 0.102)
    assert first.open == pytest.approx(0.1 / 3571428.57)
    assert first.close == pytest.approx(0.102 / 3571428.57)
    assert {t.token for t in pump} == {"9BB6NFEcjBCtnNLFko2FqVQBq8HHM13kCyYcdQbgpump",
                                       "HeLp6NuQkmYB4pYWo2zYs22mESHXPQYzXbB8n4V98jwC"}  # fmt: skip
    enriched = RUNS["dexscreener_enriched"]()
    popcat = [t for t in enriched if t.token.startswith("7GCi")]
    assert all(t.liquidity == 1250333.12 for t in popcat)  # the most liquid of its two pairs
    assert all((t.buys, t.sells, t.market_cap) == (42 / 5, 18 / 5, 23_100_000.0) for t in popcat)
    assert [t for t in enriched if t.token.startswith("9BB6")] == pump[:2]  # measured fields kept
    snaps = RUNS["dexscreener_snapshot"]()
    assert len(snaps) == len({t.token for t in snaps}) == 2  # one tick a token: its most liquid pair's
    assert next(t.close for t in snaps if t.token.startswith("7GCi")) == 0.00002355


def test_the_trade_aggregator_drops_late_and_duplicate_trades() -> None:
    bars = TradeBars(grace_seconds=2.0)
    assert bars.add(Trade("A", 60.5, 2.0, 1.0, "buy", "s1")) is None
    assert bars.add(Trade("A", 61.0, 2.0, 1.0, "buy", "s1")) == "duplicate"
    assert bars.close(121.0) == []  # minute 1 ended at 120: inside the grace
    (bar,) = bars.close(122.5)
    assert (bar.ts, bar.close, bar.buys) == (60, 2.0, 1.0)
    assert bars.add(Trade("A", 119.0, 3.0, 1.0, "sell", "s2")) == "late"  # minute 1 was emitted
    assert bars.add(Trade("A", 130.0, -1.0, 1.0, "sell", "s3")) == "bad_price"
    assert dict(bars.counts) == {"trades": 1, "duplicate": 1, "late": 1, "bad_price": 1}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: binance.kline_event({"e": "trade"}), "kline event"),
        (
            lambda: binance.kline_event(
                {"e": "kline", "k": {"x": True, "s": "X", "t": 0, "o": "a", "h": 1, "l": 1, "c": 1, "v": 1}}
            ),
            "open",
        ),
        (lambda: binance.rest_klines("X", {"code": -1121}, 0), "list of rows"),
        (lambda: geckoterminal.ohlcv({"errors": [{"status": "404"}]}, NOW), "ohlcv_list"),
        (lambda: birdeye.ohlcv({"success": False, "message": "Unauthorized"}, NOW), "success=false"),
        (lambda: pumpportal.trade({"txType": "buy", "mint": "M"}, NOW), "signature"),
        (
            lambda: pumpportal.trade(
                {"txType": "buy", "mint": "M", "signature": "s", "tokenAmount": 0, "solAmount": 1}, NOW
            ),
            "not positive",
        ),
        (lambda: dexscreener.snapshot_ticks({"pairs": None}, NOW), "pairs"),
        (
            lambda: dexscreener.snapshot_ticks(
                {"pairs": [{"baseToken": {"address": "A"}, "priceUsd": "nan"}]}, NOW
            ),
            "not finite",
        ),
    ],
)
def test_payloads_of_the_wrong_shape_are_feed_errors(call: object, match: str) -> None:
    with pytest.raises(FeedError, match=match):
        call()  # type: ignore[operator]


@pytest.mark.parametrize("source", ["binance", "geckoterminal", "birdeye", "pumpportal", "dexscreener"])
def test_the_feed_counts_any_payload_of_the_wrong_shape(source: str) -> None:
    from memed.feeds.client import Decoder, FeedStats

    stats = FeedStats()
    decode = Decoder(source, stats)  # type: ignore[arg-type]
    for junk in ([1, 2], "Too Many Requests", {"data": None}, {"pairs": [{"baseToken": 5}]}, 42):
        assert decode(junk, NOW, "solana:POOL") == []
    assert stats.frames == 5
    # PumpPortal objects without txType are messages that are not trades (acknowledgements): not errors
    assert stats.rejected["bad_payload"] == (3 if source == "pumpportal" else 5)


def test_polled_bars_go_out_once_and_snapshots_keep_the_latest_of_a_minute() -> None:
    from memed.feeds.client import Decoder, FeedStats

    gecko = Decoder("geckoterminal", FeedStats())
    payload = json.loads((FIXTURES / "geckoterminal_ohlcv.json").read_text())
    assert len(gecko(payload, NOW)) == 3
    assert gecko(payload, NOW) == []  # the same response polled again: nothing new
    dex = Decoder("dexscreener", FeedStats())
    snap = json.loads((FIXTURES / "dexscreener_pairs.json").read_text())
    first = dex(snap, NOW)
    snap["pairs"][0]["priceUsd"] = "0.00002400"
    again = dex(snap, NOW + 20)  # the same minute, a newer price: published, the daemon keeps the latest
    assert {t.token for t in again} == {t.token for t in first}
    assert max(t.close for t in again) == 0.000024
