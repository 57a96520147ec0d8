"""The webhook sink's chat shapes, posted to a real HTTP server: one message per published signal, in
the body Discord, Slack and a Telegram bot take; the batch shape stays one array per minute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from daemon_helpers import daemon_config, direct_signals, serve_webhook
from memed.daemon.sinks import Outgoing, WebhookSink
from memed.data import synth_market
from memed.signals import notify
from memed.signals.frame import SignalFrame
from memed.signals.schema import Signal

KEYS = {
    "discord": {"content", "username"},
    "slack": {"text"},
    "telegram": {"chat_id", "text", "disable_web_page_preview"},
}


@pytest.fixture(scope="module")
def signals(tiny_registry: Path) -> list[Signal]:
    cfg = daemon_config(tiny_registry, "mqtt://127.0.0.1:1", Path("/nonexistent"), policy="bands")
    got = direct_signals(synth_market(4, 400, seed=21), cfg, tiny_registry)
    return [msgspec.convert(d, Signal) for d in got.values()]


@pytest.mark.parametrize("fmt", ["batch", "discord", "slack", "telegram"])
async def test_each_webhook_shape(fmt: str, signals: list[Signal]) -> None:
    posted: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        posted.append(await request.json())
        return web.Response(status=200)

    runner, port = await serve_webhook(hook)
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", retries=0, fmt=fmt, chat_id="-100123")
    opened = [s for s in signals if s.risk is not None][:3]
    held = [s for s in signals if s.action == "HOLD"][:2]
    assert len(opened) == 3
    out = Outgoing(
        1, SignalFrame.from_signals(opened + held), SignalFrame.from_signals(opened), 0.0
    )  # the HOLDs changed nothing: not published
    await sink.send(out)
    await sink.close()
    await runner.cleanup()
    if fmt == "batch":
        assert len(posted) == 1
        assert [d["key"] for d in posted[0]] == [s.key for s in opened + held]
        assert not sink.published_only
        return
    assert sink.published_only  # counted per published signal
    assert len(posted) == 3
    for doc, sig in zip(posted, opened, strict=True):
        assert set(doc) == KEYS[fmt]
        line = doc.get("content") or doc["text"]
        assert line == notify.text(sig)
        assert line.startswith(f"{sig.action} {sig.token} at {sig.ts}")
        assert sig.risk is not None
        assert f"stop {sig.risk.stop_loss:.6g}" in line
    if fmt == "telegram":
        assert {d["chat_id"] for d in posted} == {"-100123"}
