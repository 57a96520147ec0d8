"""``memed run``: the asyncio edges around the synchronous decision path.

One :class:`asyncio.TaskGroup` owns every task (MQTT reader, batch closer, dead-letter publisher, model
reloader, journal fsync, one worker per sink, HTTP endpoints); each is named, waits are bounded,
reconnects use capped jittered backoff. Every message is journalled before it is acknowledged
(:mod:`memed.daemon.journal`) and checkpoints are taken every ``daemon.checkpoint_every_minutes``, so a
restart after any kill continues exactly (:meth:`Daemon.save_checkpoint`, ``_recover``).
:meth:`Daemon.stop` processes the minutes the clock has closed, lets the sinks drain (at most
``daemon.sink_drain_seconds``), writes the checkpoint and cancels the rest; a task's fatal error writes
it too. The minute's inference runs in a worker thread so the event loop keeps reading the broker; its
signals go to the sinks through :class:`~memed.daemon.sinks.FanOut`, so no sink can stall the minute loop;
a minute that raises is counted and its tokens reset, and the daemon goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from memed.config import MemedConfig
from memed.daemon import mqtt
from memed.daemon.batcher import Batch, MinuteBatcher
from memed.daemon.checkpoint import Checkpoint, OutboxMinute, read_checkpoint, write_checkpoint
from memed.daemon.columns import ColumnTicks, decode_any
from memed.daemon.gc_policy import GcPolicy
from memed.daemon.http import serve_http
from memed.daemon.interval import FeedIntervalCheck
from memed.daemon.journal import TickJournal, journal_files, prune, replay
from memed.daemon.latest import LatestSignals
from memed.daemon.metrics import DaemonMetrics
from memed.daemon.monitoring import Monitoring
from memed.daemon.quarantine import Quarantine, bisect_minute
from memed.daemon.sinks import (
    FanOut,
    HoldFilter,
    MqttBatchSink,
    MqttSink,
    Outgoing,
    Sink,
    file_and_webhook_sinks,
    hummingbot_topic,
    signal_topic,
)
from memed.daemon.ticks import Rejected, Tick
from memed.daemon.wire import KeyCache, signal_frame, warm_up
from memed.decision import DecisionPath, Decisions
from memed.errors import MemedError, SnapshotError
from memed.logs import get_logger
from memed.models.registry import ModelSet, load_model_set, resolve
from memed.signals.frame import SignalFrame
from memed.signals.policy import ACTIONS

log = get_logger("memed.daemon")


LOG_LINES_PER_REASON = 10
"""Rejection log lines per reason per minute at most (every rejection is counted; the rest of the lines
are counted in ``memed_log_lines_suppressed_total``)."""
DEAD_LETTER_BYTES = 2048
"""A dead letter carries at most this much of the rejected tick (or message)."""
CLOCK_POLL_SECONDS = 0.005
"""How often the batch loop looks for minutes the wall clock closed (no tick needs to arrive)."""


class RateLimit:
    """At most ``n`` events per key in each ``window`` seconds."""

    def __init__(self, n: int, window: float) -> None:
        self.n, self.window = n, window
        self._seen: dict[str, tuple[float, int]] = {}

    def allow(self, key: str, now: float) -> bool:
        start, count = self._seen.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._seen[key] = (start, count + 1)
        return count < self.n


def dead_letter(item: Rejected) -> bytes:
    """The dead-letter message of a rejection: reason, detail and the tick, the tick cut to
    :data:`DEAD_LETTER_BYTES` (as a string, marked) when its JSON is longer."""
    raw: Any = item.raw.decode("utf-8", "replace") if isinstance(item.raw, bytes | bytearray) else item.raw
    try:
        tick = msgspec.json.encode(raw)
    except (TypeError, OverflowError, RecursionError):
        tick = msgspec.json.encode(repr(raw)[:DEAD_LETTER_BYTES])
    if len(tick) > DEAD_LETTER_BYTES:
        raw = tick[:DEAD_LETTER_BYTES].decode("utf-8", "replace") + f"... ({len(tick):,} bytes)"
    return msgspec.json.encode({"reason": item.reason, "detail": item.detail[:500], "tick": raw})


class CheckpointLockedError(MemedError):
    """Another daemon holds the checkpoint."""


class BrokerRefusedError(MemedError):
    """The broker keeps refusing the credentials or the certificate."""


class ClientIdConflictError(MemedError):
    """Another client keeps taking the daemon's MQTT session over."""


SHORT_SESSION = 2.0
SHORT_SESSIONS = 5
"""This many connections in a row that the broker drops within SHORT_SESSION seconds: another client
with the same id is taking the session over (each connection ends the other's)."""


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out += _leaves(e) if isinstance(e, BaseExceptionGroup) else [e]
    return out


def _bytes(payload: Any) -> bytes:
    return bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()


class Daemon:
    def __init__(self, cfg: MemedConfig, *, clock: Any = time.time) -> None:
        self.cfg = cfg
        self.d = cfg.daemon
        self.clock = clock
        self.host, self.port, url_tls = mqtt.broker_address(self.d.broker_url)
        self.tls = url_tls or self.d.tls
        self.metrics = DaemonMetrics()
        self.batcher = MinuteBatcher.for_daemon(self.d)
        self.registry = Path(self.d.registry)
        model_set = load_model_set(self.registry, threads=self.d.inference_threads)
        self.checkpoint = Path(self.d.checkpoint_path) if self.d.checkpoint_path else None
        self._restored_last: int | None = None
        """The restored checkpoint's last minute, until the first minute after it is processed."""
        self._prev_minute: int | None = None
        """The last minute processed since the start."""
        self.quarantine = Quarantine(self.d.quarantine_minutes)
        self.gc = GcPolicy(self.d.gc_freeze)
        self._lock_fd = self._take_lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="memed-checkpoint")
        """Checkpoint writes, one at a time in the order taken: the periodic one and the stop's share one
        file, and a writer whose caller was cancelled still finishes before the next begins."""
        try:
            restored = self._read_checkpoint()
            self.path = self._initial_path(model_set, restored)
            self.metrics.serving(model_set)
            self.interval_check = FeedIntervalCheck(model_set.manifest.interval_minutes, model_set.id)
            self.monitoring = Monitoring(cfg, self.metrics, self.path, restored, self.registry)
            self.processed_minutes = 0
            self.recent_latencies: deque[float] = deque(maxlen=10_000)
            """Seconds from each minute's last tick to its signals published on MQTT (newest last)."""
            self.subscribed = asyncio.Event()
            self._arrived = asyncio.Event()
            """Set by every message: the batch loop looks for closed minutes at once."""
            self._stop = asyncio.Event()
            self._lock = asyncio.Lock()
            self.link = mqtt.Link()
            self._dead: asyncio.Queue[Rejected] = asyncio.Queue(maxsize=10_000)
            self._log_limit = RateLimit(LOG_LINES_PER_REASON, 60.0)
            self._swap: ModelSet | None = None
            self._refused: set[str] = set()
            self._signal_edges(model_set)
            self.http_port: int | None = None
            self.journal: TickJournal | None = None
            self._resumed = False
            self._checkpointed_at = 0
            if self.checkpoint is not None:
                self._recover(restored)
        except BaseException:  # a daemon that failed to start holds no lock
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            raise

    def _signal_edges(self, model_set: ModelSet) -> None:
        """Where the signals go: the hold filter, the sinks, the latest signal per token, the keys hashed
        ahead; the encoders warmed up."""
        self.holds = HoldFilter(self.d.publish_hold)
        self.fanout = FanOut(self._sinks(), self.metrics, self.d.sink_queue_minutes, on_sent=self._sent)
        self.latest = LatestSignals()
        self._keys = KeyCache()
        warm_up(tuple(model_set.manifest.horizons))

    def _sinks(self) -> list[Sink]:
        sinks: list[Sink] = []
        if self.d.signal_topic_prefix:
            sinks.append(MqttSink("mqtt", self.link, signal_topic(self.d.signal_topic_prefix)))
        if self.d.signal_batch_topic:
            sinks.append(
                MqttBatchSink("mqtt_batch", self.link, self.d.signal_batch_topic, self.d.signal_batch_format)
            )
        if self.d.hummingbot_topic_prefix:
            to_hbot = hummingbot_topic(self.d.hummingbot_topic_prefix, self.d.pairs, self.cfg.risk.stop_atr)
            sinks.append(MqttSink("hummingbot", self.link, to_hbot))
        return sinks + file_and_webhook_sinks(self.d)

    def _take_lock(self) -> int | None:
        """One daemon per checkpoint: an exclusive lock on ``<checkpoint>.lock`` for the process's life."""
        if self.checkpoint is None:
            return None
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        lock = self.checkpoint.with_name(self.checkpoint.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointLockedError(
                f"{self.checkpoint}: another memed run holds this checkpoint ({lock}); one daemon per "
                "checkpoint (set daemon.checkpoint_path for a second one)"
            ) from None
        return fd

    def _read_checkpoint(self) -> Checkpoint | None:
        """The checkpoint to restore. A corrupt one is refused (exit 2), or with
        ``daemon.corrupt_checkpoint = "move_aside"`` renamed to ``<path>.corrupt-<time>`` (with its
        journals, which continue it) and the daemon starts afresh, saying so."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return None
        try:
            return read_checkpoint(self.checkpoint)
        except SnapshotError as exc:
            if self.d.corrupt_checkpoint != "move_aside":
                raise
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            for _, journal in journal_files(self.checkpoint):
                journal.rename(journal.with_name(f"{journal.name}.corrupt-{stamp}"))
            aside = self.checkpoint.with_name(f"{self.checkpoint.name}.corrupt-{stamp}")
            self.checkpoint.rename(aside)
            log.error("checkpoint_moved_aside", error=str(exc), moved_to=str(aside), note="starting afresh")
            return None

    def _initial_path(self, model_set: ModelSet, ck: Checkpoint | None) -> DecisionPath:
        if ck is None:
            return DecisionPath(model_set, self.cfg.signals, self.cfg.risk)
        path = DecisionPath.restore(model_set, self.cfg.signals, self.cfg.risk, ck.pipeline)
        self.batcher.load_state(ck.batcher)
        self.quarantine.until = dict(ck.quarantine)
        self._restored_last = ck.batcher.last_closed if ck.batcher.last_closed >= 0 else None
        log.info("checkpoint_restored", path=str(self.checkpoint), tokens=path.tokens,
                 last_minute=self.batcher.last_closed, pending_minutes=len(ck.batcher.pending))  # fmt: skip
        return path

    def _recover(self, ck: Checkpoint | None) -> None:
        """After the checkpoint: its unsent minutes back on the sinks' queues, then every journalled
        message since it, in arrival order; a new journal epoch for what comes next."""
        assert self.checkpoint is not None
        start = ck.journal_seq if ck is not None else 0
        if ck is not None:
            unsent = {name: [Outgoing(o.minute, SignalFrame.from_signals(o.signals),
                                      SignalFrame.from_signals(o.published), o.last_arrival) for o in outs]
                      for name, outs in ck.outbox.items()}  # fmt: skip
            self.fanout.restore(unsent)
        replayed = 0
        for arrival, payload in replay(self.checkpoint, start):
            self._on_message(payload, now=arrival)
            replayed += 1
        if replayed:
            log.info("journal_replayed", messages=replayed, from_epoch=start)
        epochs = [seq for seq, _ in journal_files(self.checkpoint)]
        self.journal = TickJournal(self.checkpoint, max([start - 1, *epochs]) + 1)

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        if self.d.http_port and self.d.http_host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("http_not_loopback", host=self.d.http_host, port=self.d.http_port,
                        note="/metrics and /signals/latest have no authentication")  # fmt: skip
        t0 = time.perf_counter()
        await asyncio.to_thread(self.path.warm_up)
        log.info("warmed_up", seconds=round(time.perf_counter() - t0, 3))
        self.gc.started()
        log.info("daemon_start", broker=f"{self.host}:{self.port}", tls=self.tls, topic=self.d.tick_topic,
                 model_set=self.path.model_set.id, config_hash=self.cfg.hash(),
                 user=self.d.username or None)  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._mqtt_loop(), name="mqtt"),
                    tg.create_task(self._batch_loop(), name="batches"),
                    tg.create_task(self._dead_letter_loop(), name="dead-letters"),
                    tg.create_task(self._reload_loop(), name="model-reload"),
                    tg.create_task(self._journal_loop(), name="journal"),
                    tg.create_task(
                        self.monitoring.publish_loop(self.link, lambda: self.path.model_set.id),
                        name="monitor",
                    ),
                ]
                senders = [tg.create_task(work, name=name) for name, work in self.fanout.workers()]
                tasks += senders
                if self.d.http_port:
                    tasks.append(tg.create_task(serve_http(self), name="http"))
                await self._stop.wait()
                await self._drain(senders)
                for task in tasks:
                    task.cancel()
        except BaseExceptionGroup as group:  # a task failed: the checkpoint is written anyway
            await self.save_checkpoint()
            fatal = next((e for e in _leaves(group) if isinstance(e, MemedError)), None)
            if fatal is not None:
                log.error("daemon_fatal", error=str(fatal))
                raise fatal from None
            raise
        finally:
            await self.close()
        log.info("daemon_stopped", minutes=self.processed_minutes, rejected=self.metrics.rejected_counts(),
                 signals=self.metrics.signal_counts())  # fmt: skip

    async def close(self) -> None:
        """Close the sinks, the journal and the checkpoint lock (``run`` does so as it ends; a daemon made
        but never run must be closed by its maker)."""
        await self.fanout.close()
        await self.monitoring.flush_log()
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        await asyncio.to_thread(self._writer.shutdown)  # the last checkpoint is on disk before the lock goes
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _drain(self, senders: list[asyncio.Task[None]]) -> None:
        """Process the minutes the clock has closed, let the sinks send what is queued (bounded), stop
        the sinks' workers, then write the checkpoint. Unclosed minutes are not forced shut: they are part
        of the checkpoint and close after the restart, as they would have without it. The workers stop
        before the checkpoint, so a minute still being sent (a webhook retrying) is kept for the restart
        and not also counted ``failed`` by a send that ends after the checkpoint was taken."""
        async with self._lock:
            for batch in self._due() if self._resumed else []:  # the clock's; the rest waits
                await self._process(batch)
        await self.fanout.drain(self.d.sink_drain_seconds)
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        await self.save_checkpoint()

    async def save_checkpoint(self) -> bool:
        """A consistent checkpoint (state, unclosed minutes, unsent signals; the journal moves to a new
        epoch at the same instant), written off the event loop; older journals are deleted once it is
        durable. A failure is logged and counted, and leaves the previous checkpoint and journals."""
        if self.checkpoint is None or self.journal is None:
            return False
        async with self._lock:  # no minute is processed meanwhile; ticks keep arriving and are journalled
            pipeline = await asyncio.to_thread(self.path.snapshot)
            outbox = {name: [OutboxMinute(o.minute, o.signals.signals(), o.published.signals(),
                                          o.last_arrival) for o in outs]
                      for name, outs in self.fanout.unsent().items()}  # fmt: skip
            epoch = self.journal.rotate()
            monitor, challenger, challenger_monitor = await self.monitoring.snapshot()
            await self.monitoring.flush_log()
            ck = Checkpoint(pipeline, self.batcher.state(), epoch, outbox, monitor=monitor,
                            challenger=challenger, challenger_monitor=challenger_monitor,
                            quarantine=dict(self.quarantine.until))  # fmt: skip
            self._checkpointed_at = self.processed_minutes
        t0 = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._writer, write_checkpoint, self.checkpoint, ck
            )
        except OSError as exc:
            self.metrics.checkpoints.labels(result="failed").inc()
            log.error("checkpoint_failed", path=str(self.checkpoint), error=exc.strerror or str(exc))
            return False
        prune(self.checkpoint, epoch)
        self.metrics.checkpoints.labels(result="written").inc()
        log.info("checkpoint_written", path=str(self.checkpoint), tokens=self.path.tokens, epoch=epoch,
                 last_minute=self.batcher.last_closed, seconds=round(time.perf_counter() - t0, 4),
                 )  # fmt: skip
        return True

    # ------------------------------------------------------------------ MQTT in
    async def _mqtt_loop(self) -> None:
        backoff = 0.2
        refused = 0  # consecutive connections refused for credentials or certificates
        short = 0  # consecutive connections the broker dropped within SHORT_SESSION seconds
        while True:
            connected_at: float | None = None
            client = mqtt.client(
                self.host, self.port, identifier=self.d.client_id, persistent=True,
                username=self.d.username or None, password=self.d.password or None, tls=self.tls,
                ca_file=self.d.tls_ca_file, max_queued_incoming=200_000, manual_ack=True,
            )  # fmt: skip
            try:
                async with client:
                    mqtt.check_private_api(client)
                    await client.subscribe(self.d.tick_topic, qos=1)
                    self.link.up(client)
                    if not self._resumed:  # the first connection after a start: unclosed minutes wait afresh
                        self._resumed = True
                        async with self._lock:
                            self.batcher.resume(self.clock())
                    self.metrics.connected.set(1)
                    self.subscribed.set()
                    log.info("broker_connected", broker=f"{self.host}:{self.port}")
                    backoff, refused, connected_at = 0.2, 0, time.monotonic()
                    async for message in client.messages:
                        if self.journal is not None:
                            self.journal.append(_bytes(message.payload), self.clock())
                        mqtt.ack(client, message)
                        self._on_message(message.payload)
            except mqtt.MqttError as exc:
                self.link.down()
                payloads = mqtt.received_before_disconnect(client)
                for payload in payloads:  # not acknowledged: the broker redelivers them (then ignored)
                    if self.journal is not None:
                        self.journal.append(_bytes(payload), self.clock())
                    self._on_message(payload)
                if payloads:
                    log.info("received_before_disconnect", messages=len(payloads))
                self.subscribed.clear()
                self.metrics.connected.set(0)
                self.metrics.reconnects.inc()
                why = mqtt.refusal(exc)
                refused = refused + 1 if why else 0
                if refused >= self.d.max_refusals:
                    raise BrokerRefusedError(
                        f"broker refused {why} {refused} times in a row ({exc}): check daemon.username, "
                        "daemon.password and daemon.tls_ca_file"
                    ) from None
                lived = time.monotonic() - connected_at if connected_at is not None else None
                short = short + 1 if lived is not None and lived < SHORT_SESSION else 0
                if short >= SHORT_SESSIONS:
                    raise ClientIdConflictError(
                        f"client_id_conflict: the broker dropped {short} connections in a row within "
                        f"{SHORT_SESSION:g} s of their start; another client is using daemon.client_id "
                        f"{self.d.client_id!r} (one daemon per client id)"
                    ) from None
                log.warning("broker_lost", error=str(exc), retry_in=round(backoff, 2))
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 10.0)

    def _on_message(self, payload: Any, now: float | None = None) -> None:
        """One message: decoded, its ticks validated and batched (``now``: a replayed one's arrival)."""
        self.metrics.messages_in.inc()
        data = _bytes(payload)
        now = self.clock() if now is None else now
        got = decode_any(bytes(data), now, self.d.max_future_seconds, self.d.reject_unknown_fields,
                         self.d.max_message_bytes)  # fmt: skip
        accepted = 0
        batcher, quarantine, cap = self.batcher, self.quarantine, self.d.max_tokens
        capped = batcher.tracked + len(got) > cap  # else no tick of this message can pass the cap
        items: list[Tick | Rejected]
        if isinstance(got, ColumnTicks):  # whole, when the batcher can take it so (no object per tick)
            whole = not capped and not quarantine.until and batcher.add_columns(got.tokens, got.minutes,
                                                                                got.bars, now)  # fmt: skip
            items = [*got.rejected] if whole else [*got.rejected, *got.ticks()]
            accepted = len(got) if whole else 0
        else:
            items = got
        for item in items:
            if isinstance(item, Rejected):
                self.metrics.reject(item.reason)
                if self._log_limit.allow(item.reason, now):
                    log.warning("tick_rejected", reason=item.reason, detail=item.detail[:200])
                else:
                    self.metrics.logs_suppressed.inc()
                try:
                    self._dead.put_nowait(item)
                except asyncio.QueueFull:
                    self.metrics.dead_letters_dropped.inc()
                continue
            if capped and batcher.tracked >= cap and not batcher.knows(item.token):
                self.metrics.reject("too_many_tokens")
                if self._log_limit.allow("too_many_tokens", now):
                    log.warning("tick_rejected", reason="too_many_tokens", max_tokens=cap)
                continue
            if quarantine.until and quarantine.holds(item.token, item.minute):
                self.metrics.reject("quarantined")
                continue
            accepted += 1
            ignored = batcher.add(item, now)
            if ignored is not None:
                self.metrics.reject(ignored)
                if ignored == "late":
                    self.monitoring.late(item.token, item.minute, item.row())
        self.metrics.ticks_in.inc(accepted)
        self._arrived.set()

    async def _dead_letter_loop(self) -> None:
        while True:
            item = await self._dead.get()
            body = dead_letter(item)
            client = self.link.client
            if client is not None:
                with contextlib.suppress(mqtt.MqttError):
                    await client.publish(self.d.dead_letter_topic, body, qos=0)

    # ------------------------------------------------------------------ batches
    async def _batch_loop(self) -> None:
        """Closes minutes as ticks arrive (a minute whose expected tokens have all ticked is processed at
        once), and every few milliseconds for the ones the clock closes."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOCK_POLL_SECONDS):
                    await self._arrived.wait()
            self._arrived.clear()
            if not self._resumed:  # until the first connection, the broker may still hold a minute's ticks
                continue
            async with self._lock:
                if self._swap is not None:
                    self._apply_swap()
                for batch in self._due():
                    await self._process(batch)
            if self.processed_minutes - self._checkpointed_at >= self.d.checkpoint_every_minutes:
                await self.save_checkpoint()

    def _due(self) -> list[Batch]:
        """The batches the clock has closed; deferred ticks ignored as they joined them are counted."""
        batches = self.batcher.due(self.clock())
        if self.batcher.ignored_later:
            for reason, n in self.batcher.ignored_later.items():
                self.metrics.reject(reason, n)
            self.batcher.ignored_later.clear()
        return batches

    async def _journal_loop(self) -> None:
        """fsync the journal every second, off the event loop."""
        while True:
            await asyncio.sleep(1.0)
            if self.journal is not None:
                with contextlib.suppress(OSError, ValueError):  # ValueError: closed while rotating
                    await asyncio.to_thread(self.journal.fsync)

    async def _process(self, batch: Batch) -> None:
        tokens, bars = self._admit(batch)
        try:
            result: Decisions = await asyncio.to_thread(self.path.process, tokens, float(batch.minute), bars)
        except Exception as exc:  # no minute may stop the daemon
            await self._contain(batch.minute, tokens, bars, exc)
            return
        model_set = result.model_set
        keys = self._keys.keys(tokens, batch.minute, model_set) if len(result) == len(tokens) else None
        signals = signal_frame(result, keys)
        self.processed_minutes += not batch.stragglers
        self.fanout.offer(Outgoing(batch.minute, signals, self.holds.select(signals), batch.last_arrival))
        await asyncio.sleep(0)  # the sinks start sending before the rest of the minute's work
        self.latest.update(signals)
        for code, n in enumerate(np.bincount(result.action, minlength=len(ACTIONS)).tolist()):
            if n:
                self.metrics.signals.labels(action=ACTIONS[code]).inc(n)
        if result.stale:
            self.metrics.reject("stale", result.stale)
        await self.monitoring.score(batch.minute, result)
        await self.monitoring.log_served(batch.minute, tokens, bars, result)
        promoted = await self.monitoring.shadow_step(batch.minute, tokens, bars)
        if promoted is not None:  # the challenger serves from the next minute; the old set is not reloaded
            self._refused.add(self.path.model_set.id)
            self.path = promoted
            self.metrics.serving(promoted.model_set)
        self.metrics.batch_size.observe(len(tokens))
        self.metrics.lag.set(self.clock() - (batch.minute + 1) * 60)
        self._evict(batch.minute)
        if not batch.stragglers:  # (a few tokens: the next minute's keys stay prepared for the rest)
            step = self.path.model_set.manifest.interval_minutes
            self._keys.prepare(tokens, batch.minute + step, model_set)
        self.gc.minute_done(idle=self.batcher.idle)

    def _admit(self, batch: Batch) -> tuple[list[str], np.ndarray]:
        """The minute's tokens and bars, less the quarantined ones; the feed's interval, a recovery gap
        and minutes no token ticked in are checked on the way."""
        tokens, bars = batch.tokens, batch.bars
        if self.quarantine.until:  # closed with this minute's predecessor, before its bisection
            kept = [i for i, t in enumerate(tokens) if not self.quarantine.holds(t, batch.minute)]
            if len(kept) < len(tokens):
                self.metrics.reject("quarantined", len(tokens) - len(kept))
                tokens, bars = [tokens[i] for i in kept], bars[:, kept]
        if not self.interval_check.done:  # a feed on another interval than the set's is fatal
            self.interval_check.observe(batch.minute, self.path.last_minutes(tokens))
        if batch.stragglers:  # a minute already processed, its late-coming tokens: no new minute
            self.metrics.stragglers.inc(len(tokens))
        elif self._restored_last is not None:
            self._check_recovery_gap(batch.minute, tokens)
        elif self._prev_minute is not None and batch.minute - self._prev_minute > 1:
            # no token ticked in between: the feed stopped (as in training, short holes are flat-filled)
            missing = batch.minute - self._prev_minute - 1
            self.metrics.minutes_missing.inc(missing)
            log.warning("minutes_missing", missing_minutes=missing, after_minute=self._prev_minute,
                        first_minute=batch.minute)  # fmt: skip
        self._prev_minute = batch.minute
        return tokens, bars

    async def _contain(self, minute: int, tokens: list[str], bars: np.ndarray, exc: Exception) -> None:
        """A minute that raised: counted and logged; the failed call may have advanced some tokens' state,
        so the minute's tokens start afresh, and the bisection quarantines the ones that make it raise."""
        self.metrics.minutes_failed.inc()
        log.exception("minute_failed", minute=minute, tokens=len(tokens),
                      error=f"{type(exc).__name__}: {exc}"[:500])  # fmt: skip
        found = await asyncio.to_thread(bisect_minute, self.path, tokens, float(minute), bars)
        self.quarantine.add(found.culprits, minute)
        if taken := self.batcher.withdraw(found.culprits):  # their ticks already in later minutes
            self.metrics.reject("quarantined", taken)
        log.error("tokens_quarantined", minute=minute, tokens=found.culprits[:20], count=len(found.culprits),
                  until_minute=minute + self.d.quarantine_minutes, runs=found.runs,
                  gave_up=found.exhausted)  # fmt: skip

    def _evict(self, minute: int) -> None:
        """Idle tokens are forgotten every minute (one vectorised pass over the token table)."""
        gone = self.path.evict_idle(float(minute), self.d.evict_ttl_minutes)
        self.monitoring.evict(minute, gone, self.d.evict_ttl_minutes)
        if gone:
            self.batcher.forget(gone)
            self.holds.forget(gone)
            self.latest.forget(gone)
        self.metrics.tokens.set(self.path.tokens)

    def _check_recovery_gap(self, minute: int, tokens: list[str]) -> None:
        """The first minute after a restored checkpoint: minutes missing in between were lost while the
        daemon was away (a broker that did not keep them). They are counted and warned about, and the
        tokens that ticked at the checkpoint's last minute restart their features instead of having the
        hole filled with flat bars the market never printed."""
        last, self._restored_last = self._restored_last, None
        assert last is not None
        gap = minute - last - 1
        if gap <= 0:
            return
        seen = self.path.last_minutes(tokens)
        stale = [t for t, m in zip(tokens, seen.tolist(), strict=True) if m == last]
        reset = self.path.forget(stale)
        self.holds.forget(reset)
        self.metrics.recovery_gap.inc(gap)
        log.warning("recovery_gap", missing_minutes=gap, after_minute=last, first_minute=minute,
                    tokens_restarted=len(reset))  # fmt: skip

    def _sent(self, sink: Sink, out: Outgoing) -> None:
        """A sink delivered a minute: for the MQTT signal topics (the per-token ones, else the batch
        topic), that is the tick-to-signal latency."""
        if sink.name == ("mqtt" if self.d.signal_topic_prefix else "mqtt_batch"):
            latency = max(0.0, self.clock() - out.last_arrival)
            self.metrics.latency.observe(latency)
            self.recent_latencies.append(latency)

    # ------------------------------------------------------------------ model reload
    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.d.reload_poll_seconds)
            try:
                target = resolve(self.registry)
            except (MemedError, OSError):
                continue
            current = self.path.model_set.id
            if target.name in (current, *self._refused):
                continue
            try:
                ms = await asyncio.to_thread(load_model_set, target, threads=self.d.inference_threads,
                                             expect_spec_hash=self.path.spec.hash)  # fmt: skip
            except Exception as exc:  # no reload error may stop the daemon: the old set serves on
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
        self.monitoring.swapped(ms)
        self.metrics.reloads.labels(result="loaded").inc()
        self.metrics.serving(ms)
        log.info("model_set_loaded", model_set=ms.id)


__all__ = ["Daemon"]
