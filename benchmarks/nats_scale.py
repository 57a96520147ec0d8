"""``memed run --source nats``: tick-to-signal latency and sustained throughput with N daemon processes
sharing a real nats-server's partitioned stream, the packaged model set, and warm state.

For each (daemons, tokens): a fresh nats-server (JetStream, the partition mapping); each partition's
state is warmed by running ``--warmup`` minutes of history through a lane of its tokens and stored as
the partition's snapshot, so the daemons start from it exactly as a takeover would; then the daemons
start, and this process publishes each minute's ticks (one message per token on
``memed.ticks.<token>``, core NATS) at a fixed pace and times, per minute, from its last tick published
to the last of its signals received on ``memed.signals.*`` (published by the daemons to JetStream and
acknowledged, one message per token). Minutes published before the partitions settled (the daemons'
last takeover) are left out, and the two after. Then
``--flood`` minutes back to back give the sustained ticks/s. Publisher, subscriber, server and daemons
share this machine's cores.

    python benchmarks/nats_scale.py --daemons 1 2 --tokens 1000 5000
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import nats
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker import NatsServer
from daemon import T0_MIN, market
from memed.config import MemedConfig, to_toml
from memed.daemon.checkpoint import BatcherState
from memed.daemon.demo import DEMO_MODELS
from memed.daemon.nats.lane import Lane, encode_snapshot
from memed.daemon.nats.layout import Layout, ensure, partition_of, server_config
from memed.models.registry import load_model_set

SKIP = 2
BATCH_SUBJECT = "memed.signals_batch"


def config(url: str, partitions: int, batch_signals: bool = False) -> MemedConfig:
    cfg = MemedConfig()
    d = msgspec.structs.replace(cfg.daemon, registry=str(DEMO_MODELS), http_port=0, checkpoint_path="",
                                publish_hold="always", batch_wait_seconds=10.0)  # fmt: skip
    n = msgspec.structs.replace(cfg.nats, url=url, partitions=partitions, snapshot_every_minutes=1_000,
                                signal_subject="" if batch_signals else "memed.signals",
                                signal_batch_subject=BATCH_SUBJECT if batch_signals else "")  # fmt: skip
    return msgspec.structs.replace(cfg, daemon=d, nats=n)


async def seed(cfg: MemedConfig, bars: np.ndarray, names: list[str], warmup: int) -> float:
    """Every partition's warm snapshot in the object store; returns the decision path's median seconds a
    minute for all tokens (the floor: one process, one call)."""
    ms = load_model_set(DEMO_MODELS)
    parts: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(names):
        parts[partition_of(t, cfg.nats.partitions)].append(i)
    nc = await nats.connect(cfg.nats.url)
    await ensure(nc, cfg.nats)
    store = await nc.jetstream().create_object_store(cfg.nats.snapshot_bucket)
    times = np.zeros(warmup)
    for p, idx in sorted(parts.items()):
        lane = Lane.fresh(p, ms, cfg)
        tokens = [names[i] for i in idx]
        for k in range(warmup):
            x = np.full((9, len(idx)), np.nan)
            x[:5] = bars[k, idx].T
            t = time.perf_counter()
            lane.path.process(tokens, float(T0_MIN + k), x)
            times[k] += time.perf_counter() - t
        lane.batcher.load_state(BatcherState(T0_MIN + warmup - 1, {}, tokens))
        await store.put(Layout(cfg.nats).snapshot_name(p), encode_snapshot(lane.snapshot()))
    await nc.close()
    whole = Lane.fresh(0, ms, cfg).path
    floor = []
    for k in range(warmup):
        x = np.full((9, len(names)), np.nan)
        x[:5] = bars[k].T
        t = time.perf_counter()
        whole.process(names, float(T0_MIN + k), x)
        floor.append(time.perf_counter() - t)
    return float(np.median(floor[warmup // 2 :])), float(np.median(times[warmup // 2 :]))


class Arrivals:
    """When the last signal of each minute arrived (per-token messages or per-partition arrays); a
    minute a takeover published again is counted once."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.seen: dict[int, set[str]] = defaultdict(set)
        self.last: dict[int, float] = {}
        self._minute: dict[str, int] = {}

    def count(self, ts: str, tokens: list[str]) -> None:
        m = self._minute.get(ts)
        if m is None:
            m = self._minute[ts] = int(calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))) // 60
        seen = self.seen[m]
        seen.update(tokens)
        if len(seen) == self.tokens and m not in self.last:
            self.last[m] = time.perf_counter()

    async def on_signal(self, msg: Any) -> None:
        doc = msgspec.json.decode(msg.data)
        self.count(doc["ts"], [doc["token"]])

    async def on_batch(self, msg: Any) -> None:
        docs = msgspec.json.decode(msg.data)
        self.count(docs[0]["ts"], [d["token"] for d in docs])


async def drive(url: str, bars: np.ndarray, names: list[str], first: int, args: argparse.Namespace,
                pace: float) -> dict[str, Any]:  # fmt: skip
    nc = await nats.connect(url)
    got = Arrivals(len(names))
    if args.signals == "batch":
        await nc.subscribe(BATCH_SUBJECT, cb=got.on_batch)
    else:
        await nc.subscribe("memed.signals.*", cb=got.on_signal)
    sent: dict[int, float] = {}
    sent_wall: dict[int, float] = {}
    parts: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(names):
        parts[partition_of(t, args.partitions)].append(i)

    async def publish(k: int) -> None:
        m = first + k
        if args.payload == "columns":  # one column batch per partition, on its own subject
            fields = dict(zip(("open", "high", "low", "close", "volume"), bars[k].T.tolist(), strict=True))
            for p, idx in parts.items():
                body = {"token": [names[i] for i in idx], "ts": [m * 60] * len(idx)}
                body |= {f: [v[i] for i in idx] for f, v in fields.items()}
                await nc.publish(f"memed.part.{p}.batch", msgspec.json.encode(body))
        else:
            for t, b in zip(names, bars[k].tolist(), strict=True):
                tick = dict(zip(("open", "high", "low", "close", "volume"), b, strict=True))
                await nc.publish(f"memed.ticks.{t}", msgspec.json.encode({"token": t, "ts": m * 60, **tick}))
        await nc.flush()
        sent[m] = time.perf_counter()
        sent_wall[m] = time.time()

    start = time.perf_counter()
    for k in range(args.minutes):
        await publish(k)
        await asyncio.sleep(max(0.0, start + (k + 1) * pace - time.perf_counter()))
    while len(got.last) < args.minutes - 1:  # the last paced minute closes with the flood's first
        await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    for k in range(args.minutes, args.minutes + args.flood):
        await publish(k)
    while len(got.last) < args.minutes + args.flood - 1:
        await asyncio.sleep(0.005)
    flood_s = time.perf_counter() - t0
    await nc.close()
    paced = sorted(got.last)[: args.minutes - 1]
    return {
        "sent_wall": [sent_wall[m] for m in paced],
        "latency": [got.last[m] - sent[m] for m in paced],
        "sustained": len(names) * (args.flood - 1) / flood_s,
    }


def one(daemons: int, tokens: int, args: argparse.Namespace) -> None:
    bars = market(tokens, args.warmup + args.minutes + args.flood)
    names = [f"TOK{i:05d}" for i in range(tokens)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "nats").mkdir()
        cfg = config("", args.partitions)
        server = NatsServer(root / "nats", server_config(cfg.nats))
        server.start()
        procs = []
        try:
            cfg = config(server.url, args.partitions, args.signals == "batch")
            floor, lanes = asyncio.run(seed(cfg, bars, names, args.warmup))
            conf = root / "run.toml"
            conf.write_text(to_toml(cfg))
            logs = [root / f"d{i}.log" for i in range(daemons)]
            for log in logs:
                command = [
                    sys.executable,
                    "-m",
                    "memed.cli",
                    "run",
                    "--source",
                    "nats",
                    "--config",
                    str(conf),
                ]
                with open(log, "wb") as fh:
                    procs.append(subprocess.Popen(command, stdout=fh, stderr=fh))
            deadline = time.monotonic() + 120
            while not all("daemon_start" in log.read_text() for log in logs):
                if time.monotonic() > deadline:
                    raise RuntimeError("daemons did not start: " + logs[0].read_text()[-2000:])
                time.sleep(0.2)
            time.sleep(2.0)  # heartbeats in: each daemon asks for its share
            pace = args.pace or 1.0 + 0.25 * tokens / 1000
            r = asyncio.run(drive(server.url, bars[args.warmup :], names, T0_MIN + args.warmup, args, pace))
            owned = [log.read_text().count('"partition_taken"') for log in logs]
            moves = [json.loads(line)["at"] for log in logs for line in log.read_text().splitlines()
                     if '"partition_taken"' in line]  # fmt: skip
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
            server.stop()
    # the minutes published once the partitions had settled (the last takeover + 1 s), after SKIP
    settled = max(moves) + 1.0
    lat = np.array([x for w, x in zip(r["sent_wall"], r["latency"], strict=True) if w > settled][SKIP:])
    p50, p99, worst = (1e3 * float(np.percentile(lat, q)) for q in (50, 99, 100))
    print(f"{daemons} daemon(s) {tokens:>6} tokens: tick->signal p50 {p50:7.1f} ms  "
          f"p99 {p99:7.1f} ms  max {worst:7.1f} ms over {len(lat)} minutes | "
          f"decision path alone {1e3 * floor:5.1f} ms (one call), {1e3 * lanes:5.1f} ms (a call per "
          f"partition) | sustained {r['sustained']:,.0f} ticks/s | partitions per daemon {owned}",
          flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemons", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=80)
    ap.add_argument("--minutes", type=int, default=12)
    ap.add_argument("--flood", type=int, default=6)
    ap.add_argument("--payload", choices=["rows", "columns"], default="rows",
                    help="rows: a message per tick on memed.ticks.<token>; columns: a column batch a minute "
                         "per partition on memed.part.<n>.batch")  # fmt: skip
    ap.add_argument("--signals", choices=["per-token", "batch"], default="per-token",
                    help="per-token: a message per signal on memed.signals.<token>; batch: a partition's "
                         "minute as one array on nats.signal_batch_subject")  # fmt: skip
    ap.add_argument(
        "--pace", type=float, default=0.0, help="seconds between minutes (0: 1 s + 0.25 s per 1k)"
    )
    args = ap.parse_args()
    print(f"ticks as {args.payload}, {args.partitions} partitions, signals {args.signals}", flush=True)
    for tokens in args.tokens:
        for daemons in args.daemons:
            one(daemons, tokens, args)


if __name__ == "__main__":
    main()
