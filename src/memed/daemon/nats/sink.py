"""Signals onto JetStream: each on ``<signal_subject>.<token>`` with ``Nats-Msg-Id`` = the signal's key
(:class:`NatsSink`), and/or a partition's minute as one array (:class:`NatsBatchSink`), so the signal
stream keeps one copy of a minute a takeover published twice."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from memed.daemon.sinks import Outgoing, SinkError
from memed.logs import get_logger
from memed.signals.frame import SignalFrame
from memed.signals.schema import Signal

log = get_logger("memed.daemon.nats")
CHUNK = 2_000
"""Publishes awaiting their acknowledgement at once (under nats-py's 4,000 pending asynchronous ones)."""
ATTEMPTS = 5
PUBLISH_TIMEOUT = 2.0


class NatsSink:
    published_only = True

    def __init__(self, name: str, js: Any, subject: str) -> None:
        self.name = name
        self.js = js
        self.subject = subject

    async def _chunk(self, chunk: list[Signal]) -> list[Signal]:
        """Publish ``chunk`` without waiting between messages, then wait for every acknowledgement; the
        signals not acknowledged in time."""
        futures = []
        for sig in chunk:
            subject, body = f"{self.subject}.{sig.token}", msgspec.json.encode(sig)
            futures.append(await self.js.publish_async(subject, body, headers={"Nats-Msg-Id": sig.key}))
        done, _ = await asyncio.wait(futures, timeout=PUBLISH_TIMEOUT)
        failed = []
        for sig, fut in zip(chunk, futures, strict=True):
            if fut not in done or fut.exception() is not None:
                fut.cancel()
                failed.append(sig)
        return failed

    async def send(self, out: Outgoing) -> None:
        pending = out.published.signals()
        for attempt in range(ATTEMPTS):
            failed: list[Signal] = []
            for at in range(0, len(pending), CHUNK):
                failed += await self._chunk(pending[at : at + CHUNK])
            if not failed:
                return
            log.warning("signals_unacknowledged", sink=self.name, minute=out.minute, signals=len(failed),
                        attempt=attempt + 1, of=ATTEMPTS)  # fmt: skip
            pending = failed
            await asyncio.sleep(0.2 * 2**attempt)
        raise SinkError(f"{len(pending)} signals of minute {out.minute} not acknowledged by JetStream")

    async def close(self) -> None:
        return None


class NatsBatchSink:
    """A partition's signals of a minute as one JSON array on one subject (``nats.signal_batch_subject``),
    de-duplicated by the stream on its first signal's key and count."""

    published_only = True

    def __init__(self, name: str, js: Any, subject: str, max_payload: int) -> None:
        self.name = name
        self.js = js
        self.subject = subject
        self.max_payload = max_payload
        """The server's message size limit (1 MB by default): a larger minute goes out in several arrays."""

    def bodies(self, signals: SignalFrame) -> list[tuple[str, bytes]]:
        """(message id, JSON array) of ``signals``, halved until each fits the server's limit."""
        body = signals.json()
        n = len(signals)
        if len(body) <= self.max_payload - 1024 or n == 1:
            return [(f"{signals.frame.item(0, 'key')}:{n}", body)]
        return self.bodies(signals.take(range(n // 2))) + self.bodies(signals.take(range(n // 2, n)))

    async def send(self, out: Outgoing) -> None:
        for msg_id, body in self.bodies(out.published) if len(out.published) else []:
            await self._publish(out.minute, msg_id, body)

    async def _publish(self, minute: int, msg_id: str, body: bytes) -> None:
        for attempt in range(ATTEMPTS):
            try:
                await self.js.publish(
                    self.subject, body, timeout=PUBLISH_TIMEOUT, headers={"Nats-Msg-Id": msg_id}
                )
                return
            except Exception as exc:  # timeouts, no responders while the server restarts
                log.warning("signal_batch_unacknowledged", sink=self.name, minute=minute,
                            error=str(exc)[:200], attempt=attempt + 1, of=ATTEMPTS)  # fmt: skip
                await asyncio.sleep(0.2 * 2**attempt)
        raise SinkError(f"minute {minute}'s signal batch not acknowledged by JetStream")

    async def close(self) -> None:
        return None
