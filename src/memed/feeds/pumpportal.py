"""PumpPortal's pump.fun websocket (``wss://pumpportal.fun/api/data``, ``subscribeTokenTrade`` /
``subscribeNewToken``): trade messages are ``{"signature", "mint", "traderPublicKey", "txType": "buy" |
"sell", "tokenAmount", "solAmount", "vTokensInBondingCurve", "vSolInBondingCurve", "marketCapSol",
"pool", ...}`` — trades, not bars, and without a timestamp: a trade's time is when it arrived. The price
is SOL per token (``solAmount / tokenAmount``), volume is SOL, liquidity the SOL in the bonding curve and
market cap ``marketCapSol``. Other messages (subscription acknowledgements, ``create`` events) are not
trades. Bars come from :class:`memed.feeds.trades.TradeBars`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memed.feeds.ticks import FeedError, number, optional
from memed.feeds.trades import Trade


def trade(msg: Mapping[str, Any], now: float) -> Trade | None:
    """A trade message → a :class:`Trade` at ``now``; None for a message that is not a trade."""
    if not isinstance(msg, Mapping):
        raise FeedError("PumpPortal message is not an object")
    side = msg.get("txType")
    if side not in ("buy", "sell"):
        return None
    mint, signature = msg.get("mint"), msg.get("signature")
    if not isinstance(mint, str) or not mint or not isinstance(signature, str) or not signature:
        raise FeedError("PumpPortal trade without mint or signature")
    tokens = number(msg.get("tokenAmount"), "tokenAmount")
    sol = number(msg.get("solAmount"), "solAmount")
    if tokens <= 0:
        raise FeedError(f"PumpPortal trade {signature}: tokenAmount {tokens} is not positive")
    return Trade(mint, now, sol / tokens, sol, side, signature,
                 optional(msg.get("vSolInBondingCurve"), "vSolInBondingCurve"),
                 optional(msg.get("marketCapSol"), "marketCapSol"))  # fmt: skip
