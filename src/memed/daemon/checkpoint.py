"""Checkpoints: the decision path's state, the batcher's (unclosed minutes included), the sinks' unsent
minutes and the tick journal's epoch, in one versioned, checksummed file written atomically.

Format 2: ``MEMEDCK2 | sha256(body) | body``, the body a msgpack document decoded into typed structs, so
a flipped byte anywhere is a :class:`~memed.errors.SnapshotError` naming the file, never a traceback
or silently wrong state. Format 1 files (``MEMEDCK1``: the decision path and the batcher's position,
written by earlier releases) are still read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec

from memed.daemon.ticks import Tick
from memed.errors import SnapshotError
from memed.signals.schema import Signal

_MAGIC_V1 = b"MEMEDCK1"
_MAGIC = b"MEMEDCK2"
_DIGEST = 32


class PendingMinute(msgspec.Struct, frozen=True):
    minute: int
    first: float
    last: float
    ticks: list[Tick]


class BatcherState(msgspec.Struct, frozen=True):
    last_closed: int = -1
    newest: dict[str, int] = {}
    expected: list[str] = []
    pending: list[PendingMinute] = []
    deferred: list[Tick] = []
    """Ticks held back for being far ahead of the watermark."""


class OutboxMinute(msgspec.Struct, frozen=True):
    """One minute's signals a sink had not yet sent."""

    minute: int
    signals: list[Signal]
    published: list[Signal]
    last_arrival: float


class Checkpoint(msgspec.Struct, frozen=True):
    pipeline: bytes
    batcher: BatcherState
    journal_seq: int = 0
    """The first journal epoch this checkpoint does not cover (replayed after restoring it)."""
    outbox: dict[str, list[OutboxMinute]] = {}
    """Sink name → its unsent minutes, oldest first."""
    monitor: bytes = b""
    """The delayed-label scoring stream (:meth:`memed.monitor.ScoreStream.snapshot`)."""
    challenger: bytes = b""
    """The shadow model set's decision path (:meth:`memed.decision.DecisionPath.snapshot`)."""
    challenger_monitor: bytes = b""
    quarantine: dict[str, int] = {}
    """Quarantined token → the last event-time minute its ticks are rejected."""


def write_checkpoint(path: Path, ck: Checkpoint) -> None:
    """Atomically: a temporary file, fsynced, renamed over ``path``, the folder fsynced. On any error the
    previous checkpoint is left as it was (and the error raised)."""
    body = msgspec.msgpack.encode(ck)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC + hashlib.sha256(body).digest() + body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at ``path``; :class:`SnapshotError` for anything but an intact memed checkpoint."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read the checkpoint: {exc.strerror or exc}") from None
    magic = blob[:8]
    if magic == _MAGIC_V1:
        return _read_v1(path, blob[8:])
    if magic != _MAGIC:
        raise SnapshotError(f"{path}: not a memed checkpoint")
    digest, body = blob[8 : 8 + _DIGEST], blob[8 + _DIGEST :]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError(f"{path}: corrupt checkpoint (checksum mismatch)")
    try:
        return msgspec.msgpack.decode(body, type=Checkpoint)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(f"{path}: corrupt checkpoint: {exc}") from None


def _read_v1(path: Path, body: bytes) -> Checkpoint:
    try:
        doc = msgspec.msgpack.decode(body)
        old = doc["batcher"]
        newest = {str(k): int(v) for k, v in old.get("newest", {}).items()}
        batcher = BatcherState(
            int(old.get("last_closed", -1)), newest, [str(t) for t in old.get("expected", [])]
        )
        return Checkpoint(pipeline=doc["pipeline"], batcher=batcher)
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise SnapshotError(f"{path}: corrupt checkpoint: {exc}") from None
