"""Where signals go: one :class:`Sink` protocol, and one :class:`FanOut` that feeds every sink.

Sinks: the signal topics on MQTT (``mqtt``), the same signals in the shape of Hummingbot's
``ai_livestream`` controller (``hummingbot``), a JSONL file (``jsonl``) and a webhook (``webhook``).

The minute loop never waits for a sink. It hands each minute's signals (:class:`Outgoing`) to the fan-out,
which puts them on every sink's own bounded queue (``daemon.sink_queue_minutes`` minutes) and returns; each
sink's worker task sends them in order. A slow or failing sink therefore cannot stall the minute loop or
another sink. The written policy when a queue is full: the *oldest* queued minute is dropped (a bot acts
on the newest signals). Every signal is counted by sink and result on ``/metrics``
(``memed_sink_signals_total{sink, result}``: ``sent``, ``failed`` — a sink gave up, e.g. a webhook after
its retries or a full disk — and ``dropped``), with a structured log line for each failure and drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import aiohttp
import msgspec

from memed.config import DaemonConfig
from memed.daemon.metrics import DaemonMetrics
from memed.daemon.mqtt import Link, publish_many
from memed.errors import MemedError
from memed.logs import get_logger
from memed.signals import hummingbot, notify
from memed.signals.frame import SignalFrame
from memed.signals.schema import Signal

log = get_logger("memed.daemon.sinks")
PUBLISH_CHUNK = 20_000
"""QoS-1 messages in flight at once: well under the 65,535 MQTT packet ids."""
RETRY_AFTER_LOSS = 0.2
"""Seconds before messages a lost connection left unconfirmed are sent again."""
HTTP_SUCCESS = range(200, 300)


@dataclass(frozen=True)
class Outgoing:
    """One minute's signals on their way out."""

    minute: int
    signals: SignalFrame
    """Every signal of the minute (the JSONL file and the webhook get all of them)."""
    published: SignalFrame
    """The ones ``daemon.publish_hold`` publishes on MQTT (see :class:`HoldFilter`)."""
    last_arrival: float
    """Wall clock of the minute's last tick (for the tick-to-signal latency)."""


class SinkError(MemedError):
    """A sink gave up on a minute's signals."""


class Sink(Protocol):
    name: str
    published_only: bool
    """True: the sink takes :attr:`Outgoing.published`; False: every signal."""

    async def send(self, out: Outgoing) -> None:
        """Deliver one minute's signals, or raise :class:`SinkError`."""

    async def close(self) -> None: ...


class HoldFilter:
    """``daemon.publish_hold`` on MQTT: BUY/SELL always; a HOLD every minute (``always``), only when the
    token's (action, reason) changed (``changes``: a HOLD after a BUY revokes it), or ``never``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._last: dict[str, tuple[str, str]] = {}

    def select(self, signals: SignalFrame) -> SignalFrame:
        if self.mode == "always":  # nothing to remember (a restart with "changes" re-sends one HOLD each)
            return signals
        frame = signals.frame
        tokens, actions, reasons = (frame.get_column(c).to_list() for c in ("token", "action", "reason"))
        states = zip(actions, reasons, strict=True)
        last = self._last
        rows = []
        changes = self.mode == "changes"
        for i, (token, state) in enumerate(zip(tokens, states, strict=True)):
            if state[0] == "HOLD" and (not changes or last.get(token) == state):
                continue
            last[token] = state
            rows.append(i)
        return signals.take(rows)

    def forget(self, tokens: list[str]) -> None:
        for token in tokens:
            self._last.pop(token, None)

    def state(self) -> dict[str, tuple[str, str]]:
        """Each token's last published (action, reason): what a snapshot carries."""
        return dict(self._last)

    def load(self, state: dict[str, tuple[str, str]]) -> None:
        self._last = {t: (a, r) for t, (a, r) in state.items()}


class MqttSink:
    """Publishes the minute's published signals with QoS 1 on the daemon's connection, in order. While
    the broker is away it waits (its queue fills, then drops); messages a lost connection left
    unconfirmed are sent again on the next one (consumers de-duplicate by the signal's ``key``)."""

    published_only = True

    def __init__(self, name: str, link: Link, encode: Callable[[Signal], tuple[str, bytes]]) -> None:
        self.name = name
        self.link = link
        self.encode = encode

    async def send(self, out: Outgoing) -> None:
        pending = [self.encode(sig) for sig in out.published.signals()]
        while pending:
            client = await self.link.wait()
            chunk, pending = pending[:PUBLISH_CHUNK], pending[PUBLISH_CHUNK:]
            unconfirmed = await publish_many(client, chunk, qos=1)
            if unconfirmed:
                pending = [chunk[i] for i in unconfirmed] + pending
                await asyncio.sleep(RETRY_AFTER_LOSS)

    async def close(self) -> None:
        return None


class MqttBatchSink(MqttSink):
    """The minute's published signals as one message on one topic (``daemon.signal_batch_topic``): a JSON
    array, or an Arrow IPC file (``daemon.signal_batch_format``)."""

    def __init__(self, name: str, link: Link, topic: str, fmt: Literal["json", "arrow"] = "json") -> None:
        super().__init__(name, link, lambda sig: (topic, b""))
        self.topic = topic
        self.fmt = fmt

    async def send(self, out: Outgoing) -> None:
        if not len(out.published):
            return
        body = out.published.arrow() if self.fmt == "arrow" else out.published.json()
        while True:
            client = await self.link.wait()
            if not await publish_many(client, [(self.topic, body)], qos=1):
                return
            await asyncio.sleep(RETRY_AFTER_LOSS)


def signal_topic(prefix: str) -> Callable[[Signal], tuple[str, bytes]]:
    """``<prefix>/<token>``: the signal as versioned JSON."""
    return lambda sig: (f"{prefix}/{sig.token}", msgspec.json.encode(sig))


def hummingbot_topic(
    prefix: str, pairs: Mapping[str, str], stop_atr: float
) -> Callable[[Signal], tuple[str, bytes]]:
    """``<prefix>/<pair>/ML_SIGNALS``: the signal in Hummingbot's ``ai_livestream`` shape
    (:mod:`memed.signals.hummingbot`)."""

    def one(sig: Signal) -> tuple[str, bytes]:
        pair = hummingbot.trading_pair(sig.token, pairs)
        return hummingbot.topic(prefix, pair), msgspec.json.encode(hummingbot.payload(sig, pair, stop_atr))

    return one


class JsonlSink:
    """Appends every signal as one JSON line, unbuffered, in a worker thread: a slow disk blocks only this
    sink. A failed write closes the file, and the minute is tried once more on a freshly opened one (a
    rotated, remounted or re-created file); if that fails too, the minute fails (counted) and the daemon
    goes on. A line a failure cut short is ended before the next one is written."""

    name = "jsonl"
    published_only = False

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: BinaryIO | None = None
        self._torn = False
        self._open()

    def _open(self) -> BinaryIO:
        if self._fh is None:
            self._fh = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open for the daemon's life
        return self._fh

    def _write(self, body: bytes) -> None:
        view = memoryview((b"\n" if self._torn else b"") + body)
        written = 0
        try:
            fh = self._open()
            while written < len(view):
                written += fh.write(view[written:]) or 0
        except OSError:
            self._torn = self._torn or written > 0
            self._close()
            raise
        self._torn = False

    def _close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    async def send(self, out: Outgoing) -> None:
        if not len(out.signals):
            return
        body = out.signals.ndjson()
        try:
            await asyncio.to_thread(self._write, body)
        except OSError:
            try:
                await asyncio.to_thread(self._write, body)  # once more, on a freshly opened file
            except OSError as exc:
                raise SinkError(f"{self.path}: {exc.strerror or exc}") from None

    async def close(self) -> None:
        self._close()


class WebhookSink:
    """POSTs each minute's signals as one JSON array (``batch``), or each published signal as one chat
    message (``discord``, ``slack``, ``telegram``: :mod:`memed.signals.notify`; the signals MQTT
    publishes, so HOLDs only when they change something); retries with capped jittered backoff."""

    name = "webhook"

    def __init__(
        self, url: str, retries: int, timeout: float = 10.0, fmt: str = "batch", chat_id: str = ""
    ) -> None:
        self.url = url
        self.retries = retries
        self.timeout = timeout
        self.fmt = fmt
        self.chat_id = chat_id
        self.published_only = fmt != "batch"
        self._session: aiohttp.ClientSession | None = None

    async def send(self, out: Outgoing) -> None:
        if self.fmt == "batch":
            if len(out.signals):
                await self._post(out.signals.json())
            return
        for sig in out.published.signals():
            await self._post(msgspec.json.encode(notify.body(self.fmt, sig, self.chat_id)))  # type: ignore[arg-type]

    async def _post(self, body: bytes) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        delay = 0.2
        problem = ""
        for attempt in range(self.retries + 1):
            try:
                async with self._session.post(
                    self.url, data=body, headers={"content-type": "application/json"}
                ) as resp:
                    if resp.status in HTTP_SUCCESS:
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            log.warning("webhook_retry", error=problem, attempt=attempt)
            if attempt < self.retries:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
        raise SinkError(f"webhook {self.url}: {problem} after {self.retries + 1} attempts")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class FanOut:
    """Every sink behind its own bounded queue and worker (see the module's description)."""

    def __init__(
        self,
        sinks: list[Sink],
        metrics: DaemonMetrics,
        queue_minutes: int,
        on_sent: Callable[[Sink, Outgoing], None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.on_sent = on_sent
        self.queues: dict[Sink, asyncio.Queue[Outgoing]] = {s: asyncio.Queue(queue_minutes) for s in sinks}
        self._sending: dict[Sink, Outgoing] = {}

    def unsent(self) -> dict[str, list[Outgoing]]:
        """Per sink name, the minutes not yet handled (the one being sent first), oldest first: what a
        checkpoint keeps so that a restart sends them."""
        out: dict[str, list[Outgoing]] = {}
        for sink, queue in self.queues.items():
            queued: list[Outgoing] = list(queue._queue)  # type: ignore[attr-defined]  # asyncio.Queue's deque
            current = self._sending.get(sink)
            minutes = ([current] if current is not None else []) + queued
            if minutes:
                out[sink.name] = minutes
        return out

    def restore(self, unsent: dict[str, list[Outgoing]]) -> None:
        """Queue a checkpoint's unsent minutes again, each for its own sink (sinks no longer configured
        are skipped)."""
        for sink, queue in self.queues.items():
            for out in unsent.get(sink.name, []):
                if queue.full():
                    break
                queue.put_nowait(out)

    def _count(self, sink: Sink, result: str, out: Outgoing) -> None:
        n = len(out.published if sink.published_only else out.signals)
        self.metrics.sink_signals.labels(sink=sink.name, result=result).inc(n)

    def offer(self, out: Outgoing) -> None:
        """Queue one minute's signals for every sink; never waits."""
        for sink, queue in self.queues.items():
            if queue.full():
                dropped = queue.get_nowait()
                queue.task_done()
                self._count(sink, "dropped", dropped)
                log.warning("sink_dropped", sink=sink.name, minute=dropped.minute, queued=queue.qsize())
            queue.put_nowait(out)
            self.metrics.sink_queue.labels(sink=sink.name).set(queue.qsize())

    def workers(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """``(task name, coroutine)`` of each sink's worker, for the daemon's task group."""
        return [(f"sink-{sink.name}", self._work(sink, queue)) for sink, queue in self.queues.items()]

    async def _work(self, sink: Sink, queue: asyncio.Queue[Outgoing]) -> None:
        """Send each queued minute; a send cancelled (the daemon stops) leaves its minute unsent, i.e. in
        :meth:`unsent`, for the checkpoint."""
        while True:
            out = await queue.get()
            self._sending[sink] = out
            cancelled = False
            try:
                await sink.send(out)
            except SinkError as exc:
                self._count(sink, "failed", out)
                log.error("sink_failed", sink=sink.name, minute=out.minute, error=str(exc))
            except asyncio.CancelledError:
                cancelled = True
                raise
            else:
                self._count(sink, "sent", out)
                if self.on_sent is not None:
                    self.on_sent(sink, out)
            finally:
                if not cancelled:
                    self._sending.pop(sink, None)
                queue.task_done()
                self.metrics.sink_queue.labels(sink=sink.name).set(queue.qsize())

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued minute has been handled, at most ``timeout`` seconds; whether all were."""
        try:
            async with asyncio.timeout(timeout):
                for queue in self.queues.values():
                    await queue.join()
        except TimeoutError:
            left = {sink.name: q.qsize() for sink, q in self.queues.items() if q.qsize()}
            log.warning("sinks_not_drained", timeout_s=timeout, minutes_left=left)
            return False
        return True

    async def close(self) -> None:
        for sink in self.queues:
            await sink.close()


def file_and_webhook_sinks(d: DaemonConfig) -> list[Sink]:
    """The sinks any daemon adds beside its broker's: ``daemon.jsonl_path`` and ``daemon.webhook_url``."""
    sinks: list[Sink] = []
    if d.jsonl_path:
        sinks.append(JsonlSink(Path(d.jsonl_path)))
    if d.webhook_url:
        sinks.append(
            WebhookSink(d.webhook_url, d.webhook_retries, fmt=d.webhook_format, chat_id=d.telegram_chat_id)
        )
    return sinks
