"""``memed run --source nats``: one of several daemons sharing a JetStream tick stream by partition.

The server decides who serves what. Each partition has a pull consumer in a priority group with the
``pinned_client`` policy: the first daemon whose pull the server answers is pinned to it, and only a
pull carrying that pin gets its messages; when the pinned daemon stops pulling for
``nats.pinned_ttl_seconds`` (it died, or hung), the server pins the partition to another daemon's
waiting pull. memed only decides how many partitions a daemon asks for: its fair share,
``ceil(partitions / live daemons)``, the live daemons being the keys of a heartbeat bucket whose entries
expire. A daemon above its share (another one joined) snapshots the excess partitions and unpins them,
so the server hands them to one that is below. Every daemon below its share pulls on every partition it
does not serve, so an orphaned partition goes to a waiting pull as soon as its pin expires; at a cold
start that means the first daemon the server answers may be pinned to more than its share, and hands
the excess back within a heartbeat (an exact handover, like any other).

Each partition a daemon serves is a :class:`~memed.daemon.nats.lane.Lane` (its own minute batcher and
decision path). Every ``nats.snapshot_every_minutes`` processed minutes, and when the partition is
released or the daemon stops, the lane's state and the stream sequence it covers go to the object store.
A daemon that is pinned to a partition restores that snapshot and replays the partition's subjects from
the next sequence before it takes the consumer's messages (those at or below its sequence are skipped),
so its state, and every signal it publishes, is what one uninterrupted daemon's would be. Signals it
publishes again for minutes the old owner had already served carry the same key, which the signal
stream's duplicate window drops and consumers de-duplicate on.

Any snapshot is a consistent pair of state and sequence, so a stale one (written by a daemon that hung
past its pin and has not noticed yet) costs a longer replay, never a wrong state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from memed.config import MemedConfig
from memed.daemon.batcher import Batch
from memed.daemon.http import serve_http
from memed.daemon.metrics import DaemonMetrics
from memed.daemon.nats.http import build_nats_app
from memed.daemon.nats.lane import Lane, decode_snapshot
from memed.daemon.nats.layout import NS, Layout, NatsSetupError, api, ensure
from memed.daemon.nats.sink import NatsBatchSink, NatsSink
from memed.daemon.sinks import FanOut, Outgoing, Sink, file_and_webhook_sinks
from memed.daemon.wire import signal_frame
from memed.errors import ConfigError, MemedError, SnapshotError
from memed.logs import get_logger
from memed.models.registry import load_model_set
from memed.monitor.served_log import ServedLog
from memed.signals.policy import ACTIONS

log = get_logger("memed.daemon.nats")

ACK_V1_TOKENS = 9
CONNECT_SECONDS = 15.0
PULL_BATCH = 1_000
PULL_SECONDS = 1.0
"""A pull waits this long for messages; the pin is kept as long as pulls keep coming (well inside the
pinned TTL)."""


def stream_position(reply: str) -> tuple[int, float]:
    """(stream sequence, stored at in epoch seconds) of a JetStream message, from its acknowledgement
    subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<cseq>.<ns>.<pending>``, or the form with
    a domain and an account hash after ``$JS.ACK`` (what nats-py's ``Msg.metadata`` reads, at a fifth of
    its cost)."""
    parts = reply.split(".")
    at = 5 if len(parts) == ACK_V1_TOKENS else 7
    return int(parts[at]), int(parts[at + 2]) / 1e9


class NatsDaemon:
    def __init__(self, cfg: MemedConfig, *, clock: Any = time.time) -> None:
        if cfg.signals.online.enabled:
            raise ConfigError("signals.online learns from every token's labels at once; it does not run "
                              "with --source nats, where each partition is decided on its own")  # fmt: skip
        if cfg.monitor.challenger:
            raise ConfigError("monitor.challenger is not supported with --source nats")
        self.cfg = cfg
        self.d = cfg.daemon
        self.n = cfg.nats
        self.clock = clock
        self.lay = Layout(self.n)
        self.model_set = load_model_set(Path(self.d.registry), threads=self.d.inference_threads)
        if getattr(self.model_set.manifest, "market_context", None):
            raise ConfigError(f"model set {self.model_set.id} uses market context (features across "
                              "tokens), which a partitioned daemon cannot compute; serve it with one "
                              "process (--source mqtt)")  # fmt: skip
        self.metrics = DaemonMetrics()
        self.metrics.serving(self.model_set)
        self.member = uuid.uuid4().hex[:16]
        self.served_log: ServedLog | None = None
        """The served-feature log (``monitor.log_dir``): this daemon's own files (its run) in the shared
        folder, for ``memed check parity`` over every daemon's."""
        if cfg.monitor.log_dir:
            m = self.model_set.manifest
            self.served_log = ServedLog(Path(cfg.monitor.log_dir), cfg.monitor.log_share, m.feature_names,
                                        m.horizons, f"{int(time.time())}-{self.member[:8]}")  # fmt: skip
        if cfg.monitor.enabled:
            log.info("monitor_scoring_off", note="the delayed-label scoring runs in one process "
                     "(--source mqtt), not per partition; the served-feature log does")  # fmt: skip
        self.lanes: dict[int, Lane] = {}
        self.live_members = 1
        self._released: dict[int, float] = {}
        """Partition → monotonic time until which this daemon does not ask for it again."""
        self._lock = asyncio.Lock()
        self._transfers = asyncio.Semaphore(1)
        """One snapshot to or from the object store at a time: at 3,000 tokens a partition's is 20 MB, and
        sixteen fetched at once (a cold start) overran the server's 64 MB of pending data for this
        connection, which it then cut as a slow consumer."""
        self._stop = asyncio.Event()
        self.processed_minutes = 0
        self.nc: Any = None
        self.js: Any = None
        self.fanout: FanOut | None = None
        self.http_port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        self._stop.set()

    @property
    def share(self) -> int:
        """Partitions this daemon asks for: its fair share of the live daemons'."""
        return math.ceil(self.n.partitions / max(1, self.live_members))

    async def run(self) -> None:
        try:
            import nats  # noqa: PLC0415 - the scale extra
        except ImportError:
            raise ConfigError("--source nats needs nats-py: pip install 'memed[scale]'") from None

        async def on_error(exc: Exception) -> None:
            log.warning("nats_error", error=str(exc)[:300])

        try:  # a server that does not answer at start: one clear line (exit 2); a supervisor restarts
            async with asyncio.timeout(CONNECT_SECONDS):
                self.nc = await nats.connect(self.n.url, name=f"memed-{self.member}", error_cb=on_error,
                                             max_reconnect_attempts=-1, reconnect_time_wait=0.5)  # fmt: skip
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise NatsSetupError(f"nats.url {self.n.url}: no server answered within {CONNECT_SECONDS:g} s "
                                 f"({why})") from None  # fmt: skip
        try:
            self.js = self.nc.jetstream()
            await ensure(self.nc, self.n)
            self.store = await self.js.create_object_store(self.n.snapshot_bucket)
            from nats.js.api import KeyValueConfig  # noqa: PLC0415

            ttl = max(3 * self.n.heartbeat_seconds, 1.0)
            self.members = await self.js.create_key_value(KeyValueConfig(self.n.member_bucket, ttl=ttl))
            await self._beat()
            await asyncio.to_thread(self.model_set_warm_up)
            # each partition hands the sinks its own minutes: the queues hold sink_queue_minutes of each
            queued = self.d.sink_queue_minutes * self.n.partitions
            self.fanout = FanOut(self._sinks(), self.metrics, queued, on_sent=self._sent)
            log.info("daemon_start", source="nats", url=self.n.url, member=self.member,
                     partitions=self.n.partitions, model_set=self.model_set.id,
                     served_log=self.cfg.monitor.log_dir or None, config_hash=self.cfg.hash())  # fmt: skip
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._partition_loop(p), name=f"partition-{p}")
                         for p in range(self.n.partitions)]  # fmt: skip
                tasks += [
                    tg.create_task(self._batch_loop(), name="batches"),
                    tg.create_task(self._member_loop(), name="members"),
                ]
                tasks += [tg.create_task(work, name=name) for name, work in self.fanout.workers()]
                if self.d.http_port:
                    tasks.append(tg.create_task(serve_http(self, build_nats_app), name="http"))
                await self._stop.wait()
                for task in tasks[: self.n.partitions]:
                    task.cancel()
                await self._hand_back()
                await self.fanout.drain(self.d.sink_drain_seconds)
                for task in tasks:
                    task.cancel()
        finally:
            with contextlib.suppress(Exception):  # bounded: a stop must not hang on a server gone away
                async with asyncio.timeout(2.0):
                    await self.members.delete(self.member)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.nc.flush()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self.nc.close()
            if self.fanout is not None:
                await self.fanout.close()

    @property
    def _late(self) -> Callable[[str, int, tuple[float, ...]], None] | None:
        return None if self.served_log is None else self.served_log.late

    def model_set_warm_up(self) -> None:
        Lane.fresh(-1, self.model_set, self.cfg).path.warm_up()

    def _sinks(self) -> list[Sink]:
        sinks: list[Sink] = []
        if self.n.signal_subject:
            sinks.append(NatsSink("nats", self.js, self.n.signal_subject))
        if self.n.signal_batch_subject:
            sinks.append(
                NatsBatchSink("nats_batch", self.js, self.n.signal_batch_subject, self.nc.max_payload)
            )
        return sinks + file_and_webhook_sinks(self.d)

    def _sent(self, sink: Sink, out: Outgoing) -> None:
        if sink.name == ("nats" if self.n.signal_subject else "nats_batch"):
            self.metrics.latency.observe(max(0.0, self.clock() - out.last_arrival))

    async def _hand_back(self) -> None:
        """On stop: every partition's minutes the clock has closed are processed, then each partition is
        snapshotted and unpinned, so another daemon takes it over at once and exactly."""
        async with self._lock:
            for lane in list(self.lanes.values()):
                for batch in lane.batcher.due(self.clock()):
                    await self._process(lane, batch)
        for p in sorted(self.lanes):
            await self._release(p, "stop")
        if self.served_log is not None:  # (each release flushed it; a lane lost meanwhile may have left rows)
            await asyncio.to_thread(self.served_log.flush)

    # ------------------------------------------------------------------ membership
    async def _beat(self) -> None:
        await self.members.put(self.member, b"%d" % len(self.lanes))
        try:
            keys = await self.members.keys()
        except Exception:  # nats-py raises NoKeysError when the bucket is empty
            keys = []
        self.live_members = max(1, len(keys))

    async def _member_loop(self) -> None:
        """Heartbeat, and give back what is above the fair share (highest partitions first)."""
        while True:
            await asyncio.sleep(self.n.heartbeat_seconds)
            try:
                await self._beat()
            except Exception as exc:  # the server away: the pins decide meanwhile
                log.warning("heartbeat_failed", error=str(exc)[:200])
                continue
            for p in sorted(self.lanes, reverse=True)[: max(0, len(self.lanes) - self.share)]:
                await self._release(p, "rebalance")
            self.metrics.partitions.set(len(self.lanes))

    def _may_take(self, p: int) -> bool:
        until = self._released.get(p)
        if until is not None and time.monotonic() < until:
            return False
        return len(self.lanes) < self.share

    # ------------------------------------------------------------------ partitions in
    async def _partition_loop(self, p: int) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def received(msg: Any) -> None:
            queue.put_nowait(msg)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=received)
        try:
            while True:
                lane = self.lanes.get(p)
                if lane is None and not self._may_take(p):
                    await asyncio.sleep(PULL_SECONDS / 4)
                    continue
                body: dict[str, Any] = {"batch": PULL_BATCH, "expires": int(PULL_SECONDS * NS),
                                        "group": self.n.group}  # fmt: skip
                if lane is not None:
                    body["id"] = lane.pin
                try:
                    await self.nc.publish(self.lay.next_subject(p), json.dumps(body).encode(), reply=inbox)
                except Exception as exc:  # reconnecting
                    log.warning("pull_failed", partition=p, error=str(exc)[:200])
                    await asyncio.sleep(PULL_SECONDS)
                    continue
                try:
                    await self._read_pull(p, queue, inbox)
                except Exception as exc:  # a takeover or a message that failed: this partition only
                    log.exception("partition_failed", partition=p, error=f"{type(exc).__name__}: {exc}"[:300])
                    self.metrics.partition_moves.labels(event="failed").inc()
                    await self._lose(p)  # unsaved: its snapshot and the stream have everything
                    await asyncio.sleep(PULL_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _read_pull(self, p: int, queue: asyncio.Queue[Any], inbox: str) -> None:
        """The answer to one pull: messages until the batch is full or a status ends it."""
        got = 0
        while got < PULL_BATCH:
            try:
                if queue.empty():
                    async with asyncio.timeout(PULL_SECONDS + 2):
                        msg = await queue.get()
                else:
                    msg = queue.get_nowait()
            except TimeoutError:
                return
            status = (msg.headers or {}).get("Status")
            if status is not None:
                if status == "423":  # the pin moved to another daemon
                    await self._lose(p)
                if status in ("404", "408", "409", "423"):
                    return
                continue
            got += 1
            await self._take(p, msg, inbox)

    async def _take(self, p: int, msg: Any, inbox: str) -> None:
        pin = (msg.headers or {}).get("Nats-Pin-Id", "")
        seq, arrival = stream_position(msg.reply)
        lane = self.lanes.get(p)
        if lane is None or lane.pin != pin:
            if lane is None and time.monotonic() < self._released.get(p, 0.0):
                return  # just released: its snapshot is older than this message, which the next owner replays
            if lane is not None:
                await self._lose(p)
            keep = asyncio.create_task(self._keep_pin(p, pin, inbox))
            try:
                lane = await self._take_over(p, pin)  # above the fair share, it is given back in a moment
            finally:
                keep.cancel()
        self.metrics.messages_in.inc()
        self.metrics.ticks_in.inc(lane.feed(seq, msg.data, arrival, self.cfg, self._late))
        self._count(lane)
        with contextlib.suppress(Exception):  # the stream, not the acknowledgement, is what a takeover reads
            await msg.ack()

    async def _keep_pin(self, p: int, pin: str, inbox: str) -> None:
        """While ``p`` is taken over (a snapshot of thousands of tokens takes a while to fetch and restore,
        and several wait their turn), pull with the new pin so the server keeps it here: its messages
        queue up and are taken, in order, once the partition is ready."""
        body = json.dumps({"batch": PULL_BATCH, "expires": int(PULL_SECONDS * NS), "group": self.n.group,
                           "id": pin}).encode()  # fmt: skip
        while True:
            await asyncio.sleep(min(PULL_SECONDS, self.n.pinned_ttl_seconds / 3))
            with contextlib.suppress(Exception):
                await self.nc.publish(self.lay.next_subject(p), body, reply=inbox)

    async def _take_over(self, p: int, pin: str) -> Lane:
        """The server pinned ``p`` to this daemon: its snapshot restored and the stream replayed from the
        sequence after it. A partition without a snapshot was never served (a first owner writes one
        before it takes a message, and acknowledges none before): it starts empty at the consumer's
        acknowledgement floor (where the consumer began), and says so in a first snapshot."""
        t0 = time.monotonic()
        lane = None
        blob = await self._get_snapshot(p)
        if blob is not None:
            try:
                where = f"{self.n.snapshot_bucket}/{self.lay.snapshot_name(p)}"
                snap = await asyncio.to_thread(decode_snapshot, blob, where)  # seconds for many tokens
                lane = await asyncio.to_thread(Lane.restore, snap, self.model_set, self.cfg)
            except (SnapshotError, MemedError) as exc:
                self.metrics.snapshots.labels(result="corrupt").inc()
                log.error("partition_snapshot_refused", partition=p, error=str(exc)[:300],
                          note="the partition's tokens start afresh from this message")  # fmt: skip
        if lane is None:
            lane = Lane.fresh(p, self.model_set, self.cfg)
            info = await api(self.nc, f"$JS.API.CONSUMER.INFO.{self.n.stream}.{self.lay.consumer(p)}")
            lane.seq = int(info["ack_floor"]["stream_seq"])
            await self._put_snapshot(lane)
        replayed = await self._replay(lane)
        lane.pin = pin
        lane.batcher.resume(self.clock())
        self.lanes[p] = lane
        self._count(lane)
        self.metrics.partitions.set(len(self.lanes))
        self.metrics.partition_moves.labels(event="taken").inc()
        log.info("partition_taken", partition=p, seq=lane.seq, replayed=replayed, tokens=lane.path.tokens,
                 seconds=round(time.monotonic() - t0, 3), at=round(time.time(), 3),
                 member=self.member)  # fmt: skip
        return lane

    async def _replay(self, lane: Lane) -> int:
        """Feed ``lane`` every message of its partition after its sequence, up to the stream's end."""
        from nats.errors import TimeoutError as NatsTimeout  # noqa: PLC0415
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: PLC0415

        info = await api(self.nc, f"$JS.API.STREAM.INFO.{self.n.stream}")
        if int(info["state"]["last_seq"]) <= lane.seq:
            return 0
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=lane.seq + 1,
                                ack_policy=AckPolicy.NONE, mem_storage=True,
                                inactive_threshold=30.0)  # fmt: skip
        sub = await self.js.pull_subscribe(self.lay.part_filter(lane.partition), stream=self.n.stream,
                                           config=config)  # fmt: skip
        n = 0
        try:
            while True:
                try:
                    msgs = await sub.fetch(PULL_BATCH, timeout=PULL_SECONDS)
                except NatsTimeout:
                    break
                for m in msgs:
                    seq, arrival = stream_position(m.reply)
                    lane.feed(seq, m.data, arrival, self.cfg, self._late)
                n += len(msgs)
                if not msgs or msgs[-1].metadata.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return n

    async def _release(self, p: int, why: str) -> None:
        """Snapshot ``p`` as it is now and unpin it (another daemon's waiting pull gets it)."""
        async with self._lock:  # not while one of its minutes is being decided
            lane = self.lanes.pop(p, None)
            if lane is None:
                return
            self._released[p] = time.monotonic() + 2 * self.n.pinned_ttl_seconds
        await self._put_snapshot(lane)
        with contextlib.suppress(NatsSetupError, Exception):
            await api(self.nc, self.lay.unpin_subject(p), {"group": self.n.group})
        self.metrics.partitions.set(len(self.lanes))
        self.metrics.partition_moves.labels(event="released").inc()
        log.info("partition_released", partition=p, seq=lane.seq, why=why, member=self.member)

    async def _lose(self, p: int) -> None:
        """The server pinned ``p`` to another daemon (this one did not pull in time): its state is
        dropped unsaved; the new owner's snapshot and replay carry on."""
        async with self._lock:
            lane = self.lanes.pop(p, None)
        if lane is not None:
            self.metrics.partitions.set(len(self.lanes))
            self.metrics.partition_moves.labels(event="lost").inc()
            log.warning("partition_lost", partition=p, seq=lane.seq, member=self.member)

    # ------------------------------------------------------------------ snapshots
    async def _get_snapshot(self, p: int) -> bytes | None:
        from nats.js.errors import NotFoundError  # noqa: PLC0415

        try:
            async with self._transfers:
                result = await self.store.get(self.lay.snapshot_name(p))
        except NotFoundError:
            return None
        data: bytes = result.data or b""
        return data

    async def _put_snapshot(self, lane: Lane) -> None:
        blob = await lane.snapshot_blob()
        if self.served_log is not None:  # what was served up to the snapshot is on disk before it is
            await asyncio.to_thread(self.served_log.flush)
        try:
            async with self._transfers:
                await self.store.put(self.lay.snapshot_name(lane.partition), blob)
        except Exception as exc:  # the next one covers it; a takeover meanwhile replays further back
            self.metrics.snapshots.labels(result="failed").inc()
            log.error("partition_snapshot_failed", partition=lane.partition, error=str(exc)[:300])
            return
        self.metrics.snapshots.labels(result="written").inc()

    # ------------------------------------------------------------------ minutes
    async def _batch_loop(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            due: list[Lane] = []
            async with self._lock:
                for lane in list(self.lanes.values()):
                    for batch in lane.batcher.due(self.clock()):
                        await self._process(lane, batch)
                    if lane.minutes - lane.snapped_at >= self.n.snapshot_every_minutes:
                        due.append(lane)
                for lane in due:  # taken here, between two messages; written below
                    await self._put_snapshot(lane)

    async def _process(self, lane: Lane, batch: Batch) -> None:
        tokens, bars = batch.tokens, batch.bars
        try:
            result = await asyncio.to_thread(lane.path.process, tokens, float(batch.minute), bars)
        except Exception as exc:  # no minute may stop the daemon: its tokens start afresh
            self.metrics.minutes_failed.inc()
            log.exception("minute_failed", minute=batch.minute, partition=lane.partition, tokens=len(tokens),
                          error=f"{type(exc).__name__}: {exc}"[:500])  # fmt: skip
            lane.path.forget(tokens)
            return
        if batch.stragglers:
            self.metrics.stragglers.inc(len(tokens))
        else:
            lane.minutes += 1
            self.processed_minutes += 1
        signals = signal_frame(result)
        for code, n in enumerate(np.bincount(result.action, minlength=len(ACTIONS)).tolist()):
            if n:
                self.metrics.signals.labels(action=ACTIONS[code]).inc(n)
        assert self.fanout is not None
        self.fanout.offer(Outgoing(batch.minute, signals, lane.holds.select(signals), batch.last_arrival))
        if self.served_log is not None:
            await asyncio.to_thread(self.served_log.served, batch.minute, tokens, bars, result)
        gone = lane.path.evict_idle(float(batch.minute), self.d.evict_ttl_minutes)
        if gone:
            lane.batcher.forget(gone)
            lane.holds.forget(gone)
        self.metrics.tokens.set(sum(ln.path.tokens for ln in self.lanes.values()))

    def _count(self, lane: Lane) -> None:
        for reason, n in lane.rejected.items():
            self.metrics.reject(reason, n)
        lane.rejected.clear()
        for reason, n in lane.batcher.ignored_later.items():
            self.metrics.reject(reason, n)
        lane.batcher.ignored_later.clear()


__all__ = ["NatsDaemon"]
