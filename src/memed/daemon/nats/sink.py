"""Signals onto JetStream: each on ``<signal_subject>.<token>`` with ``Nats-Msg-Id`` = the signal's key,
so the signal stream keeps one copy of a minute a takeover published twice."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from memed.daemon.sinks import Outgoing, SinkError
from memed.signals.schema import Signal

CHUNK = 256
"""Publishes awaiting their acknowledgement at once."""
ATTEMPTS = 5
PUBLISH_TIMEOUT = 2.0


class NatsSink:
    published_only = True

    def __init__(self, name: str, js: Any, subject: str) -> None:
        self.name = name
        self.js = js
        self.subject = subject

    async def _one(self, sig: Signal) -> None:
        await self.js.publish(f"{self.subject}.{sig.token}", msgspec.json.encode(sig),
                              timeout=PUBLISH_TIMEOUT, headers={"Nats-Msg-Id": sig.key})  # fmt: skip

    async def send(self, out: Outgoing) -> None:
        pending = list(out.published)
        for attempt in range(ATTEMPTS):
            failed: list[Signal] = []
            for at in range(0, len(pending), CHUNK):
                chunk = pending[at : at + CHUNK]
                results = await asyncio.gather(*(self._one(s) for s in chunk), return_exceptions=True)
                failed += [s for s, r in zip(chunk, results, strict=True) if isinstance(r, Exception)]
            if not failed:
                return
            pending = failed
            await asyncio.sleep(0.2 * 2**attempt)
        raise SinkError(f"{len(pending)} signals of minute {out.minute} not acknowledged by JetStream")

    async def close(self) -> None:
        return None
