"""``memed run``: the asyncio edges around the synchronous decision path.

One :class:`asyncio.TaskGroup` owns every task (MQTT reader, batch closer, dead-letter publisher, model
reloader, HTTP endpoints); each is named, waits are bounded, reconnects use capped jittered backoff, and
:meth:`Daemon.stop` drains the current batches, publishes them, writes an atomic checkpoint and cancels the
rest. The minute's inference runs in a worker thread so the event loop keeps reading the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiomqtt
import msgspec
import numpy as np

from memed.config import MemedConfig
from memed.daemon.batcher import Batch, MinuteBatcher
from memed.daemon.checkpoint import read_checkpoint, write_checkpoint
from memed.daemon.metrics import DaemonMetrics
from memed.daemon.publish import publish_many
from memed.daemon.sinks import JsonlSink, WebhookSink
from memed.daemon.ticks import Rejected, decode_message
from memed.daemon.wire import to_signals
from memed.decision import DecisionPath, Decisions
from memed.errors import ConfigError, MemedError
from memed.logs import get_logger
from memed.models.registry import ModelSet, latest_id, load_model_set, resolve
from memed.signals.policy import ACTIONS
from memed.signals.schema import Signal, hummingbot_payload

log = get_logger("memed.daemon")
PUBLISH_CHUNK = 20_000  # QoS-1 messages in flight at once: well under the 65,535 MQTT packet ids
OUTBOX_MAX = 1_000_000


def broker_address(url: str) -> tuple[str, int, bool]:
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts", "tcp") or not parsed.hostname:
        raise ConfigError(f"daemon.broker_url: {url!r} is not mqtt://host[:port] or mqtts://host[:port]")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


def batch_arrays(batch: Batch) -> tuple[list[str], np.ndarray]:
    tokens = [t.token for t in batch.ticks]
    bars = np.array([t.row() for t in batch.ticks], dtype=np.float64).T.reshape(9, len(tokens))
    return tokens, np.ascontiguousarray(bars)


class Daemon:
    def __init__(self, cfg: MemedConfig, *, clock: Any = time.time) -> None:
        self.cfg = cfg
        self.d = cfg.daemon
        self.clock = clock
        self.host, self.port, url_tls = broker_address(self.d.broker_url)
        self.tls = url_tls or self.d.tls
        self.metrics = DaemonMetrics()
        self.batcher = MinuteBatcher(self.d.batch_wait_seconds, close_on_expected=self.d.close_on_expected)
        self.registry = Path(self.d.registry)
        model_set = load_model_set(self.registry, threads=self.d.inference_threads)
        self.checkpoint = Path(self.d.checkpoint_path) if self.d.checkpoint_path else None
        self.path = self._initial_path(model_set)
        self.metrics.model_set.info(
            {"id": model_set.id, "feature_spec": model_set.manifest.feature_spec_hash}
        )
        self.latest: dict[str, Signal] = {}
        self.processed_minutes = 0
        self.recent_latencies: deque[float] = deque(maxlen=10_000)
        """Seconds from each minute's last tick to its last signal published (newest last)."""
        self.subscribed = asyncio.Event()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._client: aiomqtt.Client | None = None
        self._outbox: deque[tuple[str, bytes]] = deque(maxlen=OUTBOX_MAX)
        self._dead: asyncio.Queue[Rejected] = asyncio.Queue(maxsize=10_000)
        self._swap: ModelSet | None = None
        self._published: dict[str, tuple[str, str]] = {}
        self._refused: set[str] = set()
        self._jsonl = JsonlSink(Path(self.d.jsonl_path)) if self.d.jsonl_path else None
        self._webhook = (
            WebhookSink(self.d.webhook_url, self.d.webhook_retries) if self.d.webhook_url else None
        )
        self.http_port: int | None = None

    def _initial_path(self, model_set: ModelSet) -> DecisionPath:
        if self.checkpoint is not None and self.checkpoint.exists():
            blob, state = read_checkpoint(self.checkpoint)
            path = DecisionPath.restore(model_set, self.cfg.signals, self.cfg.risk, blob)
            self.batcher.load_state(state)
            log.info("checkpoint_restored", path=str(self.checkpoint), tokens=path.tokens,
                     last_minute=self.batcher.last_closed)  # fmt: skip
            return path
        return DecisionPath(model_set, self.cfg.signals, self.cfg.risk)

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        log.info("daemon_start", broker=f"{self.host}:{self.port}", tls=self.tls, topic=self.d.tick_topic,
                 model_set=self.path.model_set.id, config_hash=self.cfg.hash(),
                 user=self.d.username or None)  # fmt: skip
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._mqtt_loop(), name="mqtt"),
                tg.create_task(self._batch_loop(), name="batches"),
                tg.create_task(self._dead_letter_loop(), name="dead-letters"),
                tg.create_task(self._reload_loop(), name="model-reload"),
            ]
            if self.d.http_port:
                from memed.daemon.http import serve_http  # noqa: PLC0415

                tasks.append(tg.create_task(serve_http(self), name="http"))
            await self._stop.wait()
            await self._drain()
            for task in tasks:
                task.cancel()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._webhook is not None:
            await self._webhook.close()
        log.info("daemon_stopped", minutes=self.processed_minutes, rejected=self.metrics.rejected_counts(),
                 signals=self.metrics.signal_counts())  # fmt: skip

    async def _drain(self) -> None:
        """Process everything pending, publish it, then write the checkpoint."""
        async with self._lock:
            for batch in self.batcher.due(self.clock(), flush=True):
                await self._process(batch)
            await self._flush_outbox()
            if self.checkpoint is not None:
                write_checkpoint(self.checkpoint, self.path.snapshot(), self.batcher.state())
                log.info("checkpoint_written", path=str(self.checkpoint), tokens=self.path.tokens)

    # ------------------------------------------------------------------ MQTT in
    async def _mqtt_loop(self) -> None:
        backoff = 0.2
        tls = aiomqtt.TLSParameters(ca_certs=self.d.tls_ca_file or None) if self.tls else None
        while True:
            client: aiomqtt.Client | None = None
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=self.d.client_id, clean_session=False,
                    username=self.d.username or None, password=self.d.password or None, tls_params=tls,
                    max_queued_incoming_messages=200_000, max_inflight_messages=0,  # bounded by PUBLISH_CHUNK
                ) as client:  # fmt: skip
                    await client.subscribe(self.d.tick_topic, qos=1)
                    self._client = client
                    self.metrics.connected.set(1)
                    self.subscribed.set()
                    log.info("broker_connected", broker=f"{self.host}:{self.port}")
                    backoff = 0.2
                    await self._flush_outbox()
                    async for message in client.messages:
                        self._on_message(message.payload)
            except aiomqtt.MqttError as exc:
                self._client = None
                if client is not None:
                    self._drain_received(client)
                self.subscribed.clear()
                self.metrics.connected.set(0)
                self.metrics.reconnects.inc()
                log.warning("broker_lost", error=str(exc), retry_in=round(backoff, 2))
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 10.0)

    def _drain_received(self, client: aiomqtt.Client) -> None:
        """Messages the broker delivered (and paho acknowledged) before the connection dropped are still
        in the old client's queue: take them, or a broker restart would lose them."""
        queue = client._queue
        drained = 0
        while not queue.empty():
            self._on_message(queue.get_nowait().payload)
            drained += 1
        if drained:
            log.info("received_before_disconnect", messages=drained)

    def _on_message(self, payload: Any) -> None:
        self.metrics.messages_in.inc()
        data = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        now = self.clock()
        for item in decode_message(bytes(data), now, self.d.max_future_seconds, self.d.reject_unknown_fields):
            if isinstance(item, Rejected):
                self.metrics.reject(item.reason)
                log.warning("tick_rejected", reason=item.reason, detail=item.detail)
                with contextlib.suppress(asyncio.QueueFull):
                    self._dead.put_nowait(item)
                continue
            self.metrics.ticks_in.inc()
            ignored = self.batcher.add(item, now)
            if ignored is not None:
                self.metrics.reject(ignored)

    async def _dead_letter_loop(self) -> None:
        while True:
            item = await self._dead.get()
            raw = item.raw if not isinstance(item.raw, bytes) else item.raw.decode("utf-8", "replace")
            body = msgspec.json.encode({"reason": item.reason, "detail": item.detail, "tick": raw})
            client = self._client
            if client is not None:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(self.d.dead_letter_topic, body, qos=0)

    # ------------------------------------------------------------------ batches
    async def _batch_loop(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            async with self._lock:
                if self._swap is not None:
                    self._apply_swap()
                for batch in self.batcher.due(self.clock()):
                    await self._process(batch)

    async def _process(self, batch: Batch) -> None:
        tokens, bars = batch_arrays(batch)
        result: Decisions = await asyncio.to_thread(self.path.process, tokens, float(batch.minute), bars)
        signals = to_signals(result)
        self.processed_minutes += 1
        for sig in signals:
            self.latest[sig.token] = sig
        for code, n in enumerate(np.bincount(result.action, minlength=len(ACTIONS)).tolist()):
            if n:
                self.metrics.signals.labels(action=ACTIONS[code]).inc(n)
        if result.stale:
            self.metrics.reject("stale", result.stale)
        await self._publish(signals)
        if self._jsonl is not None:
            self._jsonl.write(signals)
        if self._webhook is not None and not await self._webhook.send(signals):
            self.metrics.webhook_failures.inc(len(signals))
        now = self.clock()
        latency = max(0.0, now - batch.last_arrival)
        self.metrics.latency.observe(latency)
        self.recent_latencies.append(latency)
        self.metrics.batch_size.observe(len(tokens))
        self.metrics.lag.set(now - (batch.minute + 1) * 60)
        if self.processed_minutes % 60 == 0:
            gone = self.path.evict_idle(float(batch.minute), self.d.evict_ttl_minutes)
            self.batcher.forget(gone)
            for t in gone:
                self.latest.pop(t, None)
                self._published.pop(t, None)
        self.metrics.tokens.set(self.path.tokens)

    # ------------------------------------------------------------------ MQTT out
    async def _publish(self, signals: list[Signal]) -> None:
        prefix = self.d.signal_topic_prefix
        mode = self.d.publish_hold
        last = self._published
        for sig in signals:
            state = (sig.action, sig.reason)
            if sig.action == "HOLD" and (
                mode == "never" or (mode == "changes" and last.get(sig.token) == state)
            ):
                continue
            last[sig.token] = state
            self._outbox.append((f"{prefix}/{sig.token}", msgspec.json.encode(sig)))
            if self.d.hummingbot_topic_prefix:
                topic = f"{self.d.hummingbot_topic_prefix}/{sig.token}"
                self._outbox.append((topic, msgspec.json.encode(hummingbot_payload(sig))))
        await self._flush_outbox()

    async def _flush_outbox(self) -> None:
        """Publish queued signals with QoS 1; on a lost connection they stay queued for the next one."""
        while self._outbox:
            client = self._client
            if client is None:
                return
            chunk = [self._outbox.popleft() for _ in range(min(PUBLISH_CHUNK, len(self._outbox)))]
            unconfirmed = await publish_many(client, chunk, qos=1)
            if unconfirmed:
                self._outbox.extendleft(reversed([chunk[i] for i in unconfirmed]))
                return

    # ------------------------------------------------------------------ model reload
    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.d.reload_poll_seconds)
            try:
                target = resolve(self.registry)
            except MemedError:
                continue
            current = self.path.model_set.id
            if target.name in (current, *self._refused):
                continue
            try:
                ms = await asyncio.to_thread(load_model_set, target, threads=self.d.inference_threads,
                                             expect_spec_hash=self.path.spec.hash)  # fmt: skip
            except MemedError as exc:
                self._refused.add(target.name)
                self.metrics.reloads.labels(result="refused").inc()
                log.error("model_set_refused", model_set=target.name, error=str(exc), serving=current)
                continue
            self._swap = ms

    def _apply_swap(self) -> None:
        ms, self._swap = self._swap, None
        assert ms is not None
        try:
            self.path.swap_models(ms)
        except MemedError as exc:
            self._refused.add(ms.id)
            self.metrics.reloads.labels(result="refused").inc()
            log.error("model_set_refused", model_set=ms.id, error=str(exc))
            return
        self.metrics.reloads.labels(result="loaded").inc()
        self.metrics.model_set.info({"id": ms.id, "feature_spec": ms.manifest.feature_spec_hash})
        log.info("model_set_loaded", model_set=ms.id)


__all__ = ["Daemon", "batch_arrays", "broker_address", "latest_id"]
