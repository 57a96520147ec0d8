"""Publish a dataset onto MQTT, minute by minute, to feed a daemon (``memed replay``, ``memed demo``, the
tests and benchmarks; not the backtester's replay, which never touches MQTT).

One message per tick (``<prefix>/<token>``) or, with ``batch``, one JSON array per minute
(``<prefix>/batch``; with ``columns``, one column batch per minute, :mod:`memed.daemon.columns`) —
batches matter: one subscriber decodes only ~10k messages/s. QoS 1 publishes go
out in windows of at most ``window`` unacknowledged messages (MQTT packet ids are 16-bit). A lost
connection is re-established with backoff and the interrupted minute is sent again (the daemon counts
the resent ticks as duplicates).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import numpy as np
import polars as pl

from memed.daemon import mqtt
from memed.data.schema import BAR_COLUMNS
from memed.logs import get_logger

log = get_logger("memed.publish_dataset")


def minute_payloads(
    frame: pl.DataFrame, prefix: str, batch: bool, columns: bool = False
) -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    """(epoch minute, [(topic, payload)]) for each minute of a canonical frame, in time order."""
    cols = [c for c in BAR_COLUMNS if c in frame.columns and c not in ("token", "ts")]
    df = frame.sort("ts", "token").with_columns((pl.col("ts").dt.epoch("s")).alias("_s"))
    for (secs,), part in df.group_by("_s", maintain_order=True):
        ticks: list[dict[str, Any]] = []
        for row in part.select("token", "_s", *cols).iter_rows(named=True):
            tick: dict[str, Any] = {"token": row["token"], "ts": row["_s"]}
            for c in cols:
                v = row[c]
                if v is not None and not (isinstance(v, float) and np.isnan(v)):
                    tick[c] = v
            ticks.append(tick)
        minute = int(secs) // 60
        if columns:
            body = {"token": [t["token"] for t in ticks], "ts": [t["ts"] for t in ticks]}
            body |= {c: [t.get(c) for t in ticks] for c in cols if any(c in t for t in ticks)}
            yield minute, [(f"{prefix}/batch", msgspec.json.encode(body))]
        elif batch:
            yield minute, [(f"{prefix}/batch", msgspec.json.encode(ticks))]
        else:
            yield minute, [(f"{prefix}/{t['token']}", msgspec.json.encode(t)) for t in ticks]


async def publish_dataset(
    frame: pl.DataFrame,
    broker_url: str,
    *,
    prefix: str = "memed/ticks",
    batch: bool = False,
    columns: bool = False,
    speed: float = 0.0,
    qos: int = 1,
    window: int = 20_000,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    on_minute: Callable[[int, int], None] | None = None,
    client_id: str | None = None,
) -> dict[str, float]:
    """Publish every minute of ``frame``; ``speed`` x real time (0: as fast as the broker takes it)."""
    host, port, tls = mqtt.broker_address(broker_url)
    minutes = list(minute_payloads(frame, prefix, batch, columns))
    sent = 0
    reconnects = 0
    t0 = time.perf_counter()
    i = 0
    backoff = 0.2
    while i < len(minutes):
        try:
            client = mqtt.client(
                host,
                port,
                identifier=client_id,
                username=username,
                password=password,
                tls=tls,
                ca_file=ca_file,
            )
            async with client:
                backoff = 0.2
                while i < len(minutes):
                    _minute, messages = minutes[i]
                    start = time.perf_counter()
                    for s in range(0, len(messages), window):
                        if await mqtt.publish_many(client, messages[s : s + window], qos=qos):
                            raise mqtt.MqttError("connection lost with publishes unacknowledged")
                    sent += len(messages)
                    i += 1
                    if on_minute is not None:
                        on_minute(i, len(minutes))
                    if speed > 0:
                        await asyncio.sleep(max(0.0, 60.0 / speed - (time.perf_counter() - start)))
        except mqtt.MqttError as exc:
            reconnects += 1
            log.warning("publish_broker_lost", error=str(exc), minute_index=i, retry_in=round(backoff, 2))
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 5.0)
    elapsed = time.perf_counter() - t0
    return {"minutes": float(len(minutes)), "messages": float(sent), "seconds": elapsed,
            "reconnects": float(reconnects)}  # fmt: skip
