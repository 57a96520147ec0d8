"""One partition's share of the daemon: its minute batcher, its decision path, and the stream sequence
of the last message it took; and the snapshot that carries all three to another daemon.

A lane is fed the partition's messages in stream order (:meth:`Lane.feed`); a message at or below the
lane's sequence was taken already (a redelivery after a takeover, or a replayed one) and is skipped. The
snapshot (:meth:`Lane.snapshot`) is taken between two messages, so the state it holds is exactly that of
every message up to :attr:`Lane.seq`: a daemon that restores it and feeds the stream from ``seq + 1``
continues bit for bit where the old owner was.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from memed.config import MemedConfig
from memed.daemon.batcher import MinuteBatcher
from memed.daemon.checkpoint import BatcherState
from memed.daemon.columns import ColumnTicks, decode_any
from memed.daemon.nats.layout import partition_of
from memed.daemon.sinks import HoldFilter
from memed.daemon.ticks import Rejected, Tick
from memed.decision import DecisionPath
from memed.errors import SnapshotError
from memed.models.registry import ModelSet

_MAGIC = b"MEMEDPS1"


class PartitionSnapshot(msgspec.Struct, frozen=True):
    partition: int
    seq: int
    """The stream sequence of the last message this state covers (0: none yet)."""
    pipeline: bytes
    batcher: BatcherState
    minutes: int = 0
    """Minutes processed by the partition's owners, all of them together."""
    holds: dict[str, tuple[str, str]] = {}
    """``daemon.publish_hold``'s last published (action, reason) per token, so that the next owner
    publishes the HOLDs the old one would have."""


def encode_snapshot(snap: PartitionSnapshot) -> bytes:
    body = msgspec.msgpack.encode(snap)
    return _MAGIC + hashlib.sha256(body).digest() + body


def decode_snapshot(blob: bytes, where: str) -> PartitionSnapshot:
    """The snapshot in ``blob``; :class:`SnapshotError` naming ``where`` for anything else."""
    if blob[:8] != _MAGIC:
        raise SnapshotError(f"{where}: not a memed partition snapshot")
    digest, body = blob[8:40], blob[40:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError(f"{where}: corrupt partition snapshot (checksum mismatch)")
    try:
        return msgspec.msgpack.decode(body, type=PartitionSnapshot)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(f"{where}: corrupt partition snapshot: {exc}") from None


@dataclass
class Lane:
    partition: int
    path: DecisionPath
    batcher: MinuteBatcher
    seq: int = 0
    minutes: int = 0
    snapped_at: int = 0
    """:attr:`minutes` at the last snapshot."""
    pin: str = ""
    """The server's pin id for this daemon on the partition's consumer."""
    holds: HoldFilter = field(default_factory=lambda: HoldFilter("always"))
    rejected: Counter[str] = field(default_factory=Counter)
    """Rejections since the daemon last took them (it counts them on /metrics)."""

    @classmethod
    def fresh(cls, partition: int, model_set: ModelSet, cfg: MemedConfig) -> Lane:
        path = DecisionPath(model_set, cfg.signals, cfg.risk)
        return cls(
            partition, path, MinuteBatcher.for_daemon(cfg.daemon), holds=HoldFilter(cfg.daemon.publish_hold)
        )

    @classmethod
    def restore(cls, snap: PartitionSnapshot, model_set: ModelSet, cfg: MemedConfig) -> Lane:
        path = DecisionPath.restore(model_set, cfg.signals, cfg.risk, snap.pipeline)
        b = MinuteBatcher.for_daemon(cfg.daemon)
        b.load_state(snap.batcher)
        holds = HoldFilter(cfg.daemon.publish_hold)
        holds.load(snap.holds)
        return cls(snap.partition, path, b, seq=snap.seq, minutes=snap.minutes, snapped_at=snap.minutes,
                   holds=holds)  # fmt: skip

    def feed(self, seq: int, payload: bytes, arrival: float, cfg: MemedConfig,
             late: Callable[[str, int, tuple[float, ...]], None] | None = None) -> int:  # fmt: skip
        """Take the message at stream sequence ``seq``; returns the ticks accepted. A tick of a token the
        server's mapping sends to another partition is rejected (``wrong_partition``): a token is served
        by one partition only. So a feed may publish one token's ticks on ``<tick_subject>.<token>`` (the
        mapping picks the partition) or, knowing :func:`~memed.daemon.nats.layout.partition_of`, a
        column batch of every token of partition ``n`` on ``<partition_subject>.<n>.batch``. ``late``
        (the served-feature log's) is told of each tick refused as late."""
        if seq <= self.seq:
            return 0
        self.seq = seq
        d, partitions = cfg.daemon, cfg.nats.partitions
        got = decode_any(payload, arrival, d.max_future_seconds, d.reject_unknown_fields, d.max_message_bytes)
        items: list[Tick | Rejected]
        if isinstance(got, ColumnTicks):  # whole, when every token is this partition's and the batcher can
            mine = all(partition_of(t, partitions) == self.partition for t in got.tokens)
            if mine and self.batcher.add_columns(got.tokens, got.minutes, got.bars, arrival):
                self.rejected.update(r.reason for r in got.rejected)
                return len(got)
            items = [*got.rejected, *got.ticks()]
        else:
            items = got
        accepted = 0
        for item in items:
            if isinstance(item, Rejected):
                self.rejected[item.reason] += 1
                continue
            if partition_of(item.token, partitions) != self.partition:
                self.rejected["wrong_partition"] += 1
                continue
            ignored = self.batcher.add(item, arrival)
            if ignored is not None:
                self.rejected[ignored] += 1
                if ignored == "late" and late is not None:
                    late(item.token, item.minute, item.row())
            else:
                accepted += 1
        return accepted

    def snapshot(self) -> PartitionSnapshot:
        """The lane's state now (call between two :meth:`feed` calls, with no minute in progress)."""
        self.snapped_at = self.minutes
        return PartitionSnapshot(self.partition, self.seq, self.path.snapshot(), self.batcher.state(),
                                 self.minutes, self.holds.state())  # fmt: skip

    async def snapshot_blob(self) -> bytes:
        """:meth:`snapshot`, encoded, without holding the event loop: the position (sequence, batcher) is
        taken at once, between two messages; the decision path's state, which only a minute changes
        (the caller sees that none is decided meanwhile), is encoded in a worker thread — thousands of
        tokens take seconds, and a loop held that long would miss its pulls and lose its pins."""
        self.snapped_at = self.minutes
        seq, minutes, state, holds = self.seq, self.minutes, self.batcher.state(), self.holds.state()

        def encode() -> bytes:
            return encode_snapshot(
                PartitionSnapshot(self.partition, seq, self.path.snapshot(), state, minutes, holds)
            )

        return await asyncio.to_thread(encode)
