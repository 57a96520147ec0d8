"""Hummingbot's ai_livestream controller, reproduced: it listens on the topic memed publishes to, and
its volatility-adjusted triple barrier lands on memed's own stop and take-profit prices."""

from __future__ import annotations

from pathlib import Path

import msgspec

from daemon_helpers import daemon_config, direct_signals
from memed.data import synth_market
from memed.signals import hummingbot
from memed.signals.schema import Signal


def controller_topic(topic: str, trading_pair: str) -> str:
    """ai_livestream's subscription: ``f"{topic}/{trading_pair.replace('-', '_').lower()}/ML_SIGNALS"``."""
    normalized_pair = trading_pair.replace("-", "_").lower()
    return f"{topic}/{normalized_pair}/ML_SIGNALS"


def controller_barrier(entry: float, side: int, stop_loss: float, take_profit: float, target_pct: float
                       ) -> tuple[float, float]:  # fmt: skip
    """TripleBarrierConfig.new_instance_with_adjusted_volatility(target_pct): the configured fractions
    times the factor, applied to the entry by the position executor."""
    sl, tp = stop_loss * target_pct, take_profit * target_pct
    return entry * (1 - side * sl), entry * (1 + side * tp)


def test_the_controller_hears_memed_and_places_memeds_stops(tiny_registry: Path) -> None:
    market = synth_market(6, 450, seed=21)
    cfg = daemon_config(tiny_registry, "mqtt://127.0.0.1:1", Path("/nonexistent"), policy="bands")
    signals = [msgspec.convert(d, Signal) for d in direct_signals(market, cfg, tiny_registry).values()]
    opened = [s for s in signals if s.risk is not None and s.side in ("long", "short")]
    assert len(opened) > 10
    pairs = {"SYN00001": "SYN-USDT"}
    for sig in opened:
        pair = hummingbot.trading_pair(sig.token, pairs)
        doc = hummingbot.payload(sig, pair, cfg.risk.stop_atr)
        assert hummingbot.topic("hbot/predictions", pair) == controller_topic(
            "hbot/predictions", str(doc["trading_pair"])
        )
        short, neutral, long = doc["probabilities"]  # type: ignore[misc]
        side = 1 if sig.side == "long" else -1
        assert (long > short) == (side == 1)
        assert neutral == 0.0
        assert sig.risk is not None
        stop, take = controller_barrier(sig.risk.entry, side, cfg.risk.stop_atr, cfg.risk.take_profit_atr,
                                        float(doc["target_pct"]))  # type: ignore[arg-type]  # fmt: skip
        assert abs(stop - sig.risk.stop_loss) <= 1e-9 * sig.risk.entry
        assert abs(take - sig.risk.take_profit) <= 1e-9 * sig.risk.entry
    assert hummingbot.topic("hbot/predictions", "SYN-USDT") == "hbot/predictions/syn_usdt/ML_SIGNALS"


def test_tokens_map_to_trading_pairs() -> None:
    assert hummingbot.trading_pair("1000PEPE_USDT_USDT", {}) == "1000PEPE-USDT"
    assert hummingbot.trading_pair("PEPE_USDT", {}) == "PEPE-USDT"
    assert hummingbot.trading_pair("PEPE_USDT", {"PEPE_USDT": "PEPE-USDC"}) == "PEPE-USDC"
    mint = "9BB6NFEcjBCtnNLFko2FqVQBq8HHM13kCyYcdQbgpump"
    assert hummingbot.trading_pair(mint, {}) == mint
    assert (
        hummingbot.topic("hbot/predictions", "1000PEPE-USDT") == "hbot/predictions/1000pepe_usdt/ML_SIGNALS"
    )
