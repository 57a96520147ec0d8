"""Atomic checkpoints: the decision path's state plus the batcher's event-time position."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from memed.errors import SnapshotError

_MAGIC = b"MEMEDCK1"


def write_checkpoint(path: Path, pipeline_blob: bytes, batcher_state: dict[str, Any]) -> None:
    body = msgspec.msgpack.encode({"pipeline": pipeline_blob, "batcher": batcher_state})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(_MAGIC + body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> tuple[bytes, dict[str, Any]]:
    blob = path.read_bytes()
    if blob[:8] != _MAGIC:
        raise SnapshotError(f"{path}: not a memed checkpoint")
    try:
        doc = msgspec.msgpack.decode(blob[8:])
        return doc["pipeline"], doc["batcher"]
    except (msgspec.DecodeError, KeyError, TypeError) as exc:
        raise SnapshotError(f"{path}: corrupt checkpoint: {exc}") from None
