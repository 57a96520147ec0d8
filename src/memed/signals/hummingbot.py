"""Signals in the shape Hummingbot's ``ai_livestream`` controller reads.

The controller (``controllers/directional_trading/ai_livestream.py``) subscribes to
``{topic}/{trading_pair.replace('-', '_').lower()}/ML_SIGNALS`` (``topic`` defaults to
``hbot/predictions``), reads ``probabilities`` as ``[short, neutral, long]`` against its thresholds, and
multiplies its own triple barrier — ``stop_loss``, ``take_profit``, the trailing stop — by
``target_pct`` (``TripleBarrierConfig.new_instance_with_adjusted_volatility``). So memed sends the
**volatility**, ATR per close, as ``target_pct``: with the controller's ``stop_loss`` set to memed's
``risk.stop_atr`` and ``take_profit`` to ``risk.take_profit_atr``, its stop lands at
``entry x (1 - stop_atr x ATR/close) = entry - stop_atr x ATR``, memed's own stop (and likewise the
take-profit), for the entry at the signal's close.

memed's token becomes a Hummingbot trading pair through ``[daemon.pairs]`` (token → pair); an unmapped
token named the freqtrade way maps to ``BASE-QUOTE`` (``1000PEPE_USDT_USDT`` → ``1000PEPE-USDT``), any
other to itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from memed.signals.schema import Signal

DEFAULT_TOPIC = "hbot/predictions"


def trading_pair(token: str, pairs: Mapping[str, str]) -> str:
    mapped = pairs.get(token)
    if mapped:
        return mapped
    parts = token.split("_")
    if len(parts) in (2, 3) and all(parts):  # BASE_QUOTE or BASE_QUOTE_SETTLE, as freqtrade names them
        return f"{parts[0]}-{parts[1]}"
    return token


def topic(prefix: str, pair: str) -> str:
    """The controller's own rule for the topic it listens on."""
    return f"{prefix}/{pair.replace('-', '_').lower()}/ML_SIGNALS"


def volatility(sig: Signal, stop_atr: float) -> float:
    """ATR per close, recovered from the plan's stop: |entry - stop| / (stop_atr x entry); 0 without a
    plan (a HOLD or an exit opens nothing, so the controller never reads it)."""
    r = sig.risk
    if r is None or not r.entry or stop_atr <= 0:
        return 0.0
    return abs(r.entry - r.stop_loss) / (stop_atr * r.entry)


def payload(sig: Signal, pair: str, stop_atr: float) -> dict[str, object]:
    """``probabilities`` [short, neutral, long] (an exit or a HOLD is neutral, so the controller never
    reads a short into it) and ``target_pct``, the volatility its barriers are multiplied by."""
    p = sig.p_up if sig.p_up is not None else 0.5
    trades = sig.action != "HOLD" and sig.side != "exit"
    short, long = (1.0 - p, p) if trades else (0.0, 0.0)
    return {
        "id": sig.key,
        "timestamp": sig.ts,
        "trading_pair": pair,
        "probabilities": [short, 0.0 if trades else 1.0, long],
        "target_pct": volatility(sig, stop_atr),
    }
