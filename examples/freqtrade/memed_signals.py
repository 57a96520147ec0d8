"""memed signals for freqtrade, with no dependency beyond the standard library (the strategy in
``MemedStrategy.py`` uses it; memed's tests run it on a real ``signals.parquet``).

* Pairs and tokens: freqtrade's ``1000PEPE/USDT:USDT`` is memed's ``1000PEPE_USDT_USDT`` (the name
  freqtrade gives its data files), ``PEPE/USDT`` is ``PEPE_USDT``.
* Candles: memed's signal for the bar opened at ``ts`` is decided when that bar has closed; freqtrade sets
  ``enter_long`` on the candle dated ``ts`` (its open time) and fills at the next candle's open — the
  same bar and the same fill memed's backtester assumes.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

ENTRY_ACTIONS = frozenset({"BUY", "STRONG_BUY"})
EXIT_ACTIONS = frozenset({"SELL", "STRONG_SELL"})
_PAIR_CHARS = re.compile(r"[/ .@$+:]")


def pair_to_token(pair: str) -> str:
    """``1000PEPE/USDT:USDT`` → ``1000PEPE_USDT_USDT`` (freqtrade's own file-name rule)."""
    return _PAIR_CHARS.sub("_", pair)


def token_to_pair(token: str) -> str:
    """``1000PEPE_USDT_USDT`` → ``1000PEPE/USDT:USDT``; ``PEPE_USDT`` → ``PEPE/USDT``."""
    parts = token.split("_")
    if all(parts):
        match parts:
            case [base, quote, settle]:
                return f"{base}/{quote}:{settle}"
            case [base, quote]:
                return f"{base}/{quote}"
    raise ValueError(f"token {token!r} is not a freqtrade pair name")


def signal_columns(
    candle_dates: Sequence[datetime], signals: Iterable[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """The columns a strategy adds to its candles, aligned to ``candle_dates`` (timezone-aware UTC):
    ``enter_long`` / ``exit_long`` (0 or 1), and memed's plan for an entry — ``memed_stop`` (absolute
    stop price), ``memed_take`` and ``memed_notional`` (quote to spend) — None elsewhere. ``signals``
    are one token's, each with ``ts``, ``action``, ``side`` and, for an entry, ``stop_loss``,
    ``take_profit`` and ``notional``."""
    index = {d: i for i, d in enumerate(candle_dates)}
    n = len(candle_dates)
    out: dict[str, list[Any]] = {
        "enter_long": [0] * n,
        "exit_long": [0] * n,
        "memed_stop": [None] * n,
        "memed_take": [None] * n,
        "memed_notional": [None] * n,
    }
    for sig in signals:
        i = index.get(sig["ts"])
        if i is None:
            continue
        if sig["action"] in ENTRY_ACTIONS and sig.get("side", "long") == "long":
            out["enter_long"][i] = 1
            out["memed_stop"][i] = sig.get("stop_loss")
            out["memed_take"][i] = sig.get("take_profit")
            out["memed_notional"][i] = sig.get("notional")
        elif sig["action"] in EXIT_ACTIONS:
            out["exit_long"][i] = 1
    return out


def fetch_latest(base_url: str, token: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The daemon's latest signal for ``token`` (``GET /signals/latest?token=``), None when it has none
    or cannot be reached (the strategy then enters nothing)."""
    url = f"{base_url.rstrip('/')}/signals/latest?{urllib.parse.urlencode({'token': token})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    if isinstance(doc, list):
        doc = doc[0] if doc else None
    return doc if isinstance(doc, dict) and doc.get("token") == token else None


def wire_signal(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A signal as the daemon publishes it (``risk`` nested, ``ts`` ISO 8601) in the flat form
    :func:`signal_columns` takes."""
    risk = doc.get("risk") or {}
    return {
        "ts": datetime.fromisoformat(str(doc["ts"]).replace("Z", "+00:00")),
        "action": doc.get("action"),
        "side": doc.get("side", ""),
        "stop_loss": risk.get("stop_loss"),
        "take_profit": risk.get("take_profit"),
        "notional": risk.get("notional"),
    }
