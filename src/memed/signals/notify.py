"""Signals as chat messages: one line per signal, posted in the body each service's incoming webhook
takes — Discord (``{"content": ...}``), Slack (``{"text": ...}``) and a Telegram bot's ``sendMessage``
(``{"chat_id": ..., "text": ...}``, the URL being ``https://api.telegram.org/bot<token>/sendMessage``)."""

from __future__ import annotations

from typing import Literal

from memed.signals.schema import Signal

ChatFormat = Literal["discord", "slack", "telegram"]
CHAT_FORMATS: tuple[ChatFormat, ...] = ("discord", "slack", "telegram")


def _price(x: float) -> str:
    return f"{x:.6g}"


def text(sig: Signal) -> str:
    """``BUY PEPE_USDT at 2026-01-01T00:01:00Z · p_up 0.58 · entry 0.00712 · stop 0.00701 · take 0.00734 ·
    size 1,234``; a HOLD says its reason, an exit says so."""
    head = f"{sig.action} {sig.token} at {sig.ts}"
    parts = [head]
    if sig.p_up is not None:
        parts.append(f"p_up {sig.p_up:.2f}")
    if sig.side == "exit":
        parts.append("exit (leave or avoid)")
    if sig.reason:
        parts.append(sig.reason)
    r = sig.risk
    if r is not None:
        parts += [f"entry {_price(r.entry)}", f"stop {_price(r.stop_loss)}", f"take {_price(r.take_profit)}",
                  f"size {r.position_size:,.6g}"]  # fmt: skip
    return " · ".join(parts)


def body(fmt: ChatFormat, sig: Signal, chat_id: str = "") -> dict[str, object]:
    line = text(sig)
    if fmt == "discord":
        return {"content": line, "username": "memed"}
    if fmt == "slack":
        return {"text": line}
    return {"chat_id": chat_id, "text": line, "disable_web_page_preview": True}
