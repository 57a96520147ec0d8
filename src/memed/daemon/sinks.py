"""Where signals go besides MQTT: a JSONL file and a webhook (aiohttp, retries with backoff)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import msgspec

from memed.logs import get_logger
from memed.signals.schema import Signal

log = get_logger("memed.daemon.sinks")


class JsonlSink:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab")  # noqa: SIM115 - kept open for the daemon's life, closed in close()

    def write(self, signals: list[Signal]) -> None:
        if signals:
            self._fh.write(b"".join(msgspec.json.encode(s) + b"\n" for s in signals))
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class WebhookSink:
    """POSTs each minute's signals as one JSON array; retries with capped jittered backoff."""

    def __init__(self, url: str, retries: int) -> None:
        self.url = url
        self.retries = retries
        self._session: aiohttp.ClientSession | None = None

    async def send(self, signals: list[Signal]) -> bool:
        if not signals:
            return True
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        body = msgspec.json.encode(signals)
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                async with self._session.post(
                    self.url, data=body, headers={"content-type": "application/json"}
                ) as resp:
                    if resp.status < 300:
                        return True
                    log.warning("webhook_status", status=resp.status, attempt=attempt)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("webhook_error", error=str(exc), attempt=attempt)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
        return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
