"""The tick journal: every MQTT message the daemon takes, written before it is acknowledged.

Together with the periodic checkpoint it makes recovery exact: a checkpoint holds the state up to a
moment, and the journal every message since, so a restarted daemon restores the checkpoint and replays
the journal in arrival order before it reads the broker again; whatever the broker had not yet had
acknowledged, it redelivers. One file per checkpoint epoch, ``<checkpoint>.journal.<seq>``: the
checkpoint names the first epoch it does not cover, and older files are deleted once it is durable.

A record is ``length (u32) | crc32 (u32) | arrival wall clock (f64) | payload``. A write completes before
the acknowledgement, so a killed process loses nothing the broker considers delivered; the file is
fsynced at least every ``fsync_seconds`` and at every checkpoint (a machine crash may lose the last
second). Replay stops at the first torn or corrupt record (the tail a kill can leave) and says so.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from memed.logs import get_logger

log = get_logger("memed.daemon.journal")
_HEADER = struct.Struct("<IId")


def journal_path(checkpoint: Path, seq: int) -> Path:
    return checkpoint.with_name(f"{checkpoint.name}.journal.{seq:08d}")


def journal_files(checkpoint: Path) -> list[tuple[int, Path]]:
    """Every journal of ``checkpoint``, by epoch."""
    prefix = f"{checkpoint.name}.journal."
    out = []
    for p in checkpoint.parent.glob(prefix + "*"):
        suffix = p.name[len(prefix) :]
        if suffix.isdigit():
            out.append((int(suffix), p))
    return sorted(out)


class TickJournal:
    """The open journal of the current epoch (appends from the event loop; fsync from any thread)."""

    def __init__(self, checkpoint: Path, seq: int) -> None:
        self.checkpoint = checkpoint
        self.seq = seq
        self._fh = open(journal_path(checkpoint, seq), "ab", buffering=0)  # noqa: SIM115 - held open
        self.records = 0

    def append(self, payload: bytes, arrival: float) -> None:
        self._fh.write(_HEADER.pack(len(payload), zlib.crc32(payload), arrival) + payload)
        self.records += 1

    def fsync(self) -> None:
        os.fsync(self._fh.fileno())

    def rotate(self) -> int:
        """Start the next epoch (the old file is fsynced and closed); returns the new epoch."""
        self.fsync()
        self._fh.close()
        self.seq += 1
        self._fh = open(journal_path(self.checkpoint, self.seq), "ab", buffering=0)  # noqa: SIM115
        self.records = 0
        return self.seq

    def close(self) -> None:
        self.fsync()
        self._fh.close()


def prune(checkpoint: Path, below: int) -> None:
    """Delete the journals of epochs before ``below`` (a durable checkpoint covers them)."""
    for seq, path in journal_files(checkpoint):
        if seq < below:
            path.unlink(missing_ok=True)


def replay(checkpoint: Path, from_seq: int) -> Iterator[tuple[float, bytes]]:
    """``(arrival, payload)`` of every record in the journals from epoch ``from_seq`` on, in order."""
    for seq, path in journal_files(checkpoint):
        if seq < from_seq:
            continue
        data = path.read_bytes()
        at = 0
        while at < len(data):
            if at + _HEADER.size > len(data):
                log.warning("journal_torn_tail", path=str(path), offset=at, bytes=len(data) - at)
                break
            size, crc, arrival = _HEADER.unpack_from(data, at)
            payload = data[at + _HEADER.size : at + _HEADER.size + size]
            if len(payload) != size or zlib.crc32(payload) != crc:
                log.warning("journal_torn_tail", path=str(path), offset=at, bytes=len(data) - at)
                break
            yield arrival, payload
            at += _HEADER.size + size
