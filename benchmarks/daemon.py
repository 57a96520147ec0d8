"""Daemon latency and throughput with Mosquitto on loopback and the default (packaged) model set.

For each token count: the daemon's state is warmed up by running history through its decision path,
then a publisher *process* sends each minute's ticks (``--payload rows``: JSON arrays of 500 tick
objects; ``columns``: column batches of 5,000 ticks; QoS 1) at a fixed pace, and the daemon records, per
minute, the time from the minute's last tick arriving to its last signal published (QoS 1; ``--signals
per-token``: one message per token on ``memed/signals/<token>``, ``batch``: one JSON array a minute on
``daemon.signal_batch_topic``, ``batch-arrow``: one Arrow IPC file a minute there). Every signal is
published (``daemon.publish_hold = "always"``, the most work; ``--publish-hold changes``, the default of
``memed run``, publishes a HOLD only when it changes something: on this synthetic market, almost never).
A second phase publishes minutes back to back to measure sustained ticks/s.

    python benchmarks/daemon.py --tokens 1000 10000 50000 [--payload rows|columns]
                                [--signals per-token|batch|batch-arrow] [--publish-hold always|changes]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from broker import Mosquitto
from memed.config import MemedConfig
from memed.daemon.app import Daemon
from memed.daemon.checkpoint import BatcherState
from memed.daemon.demo import DEMO_MODELS
from memed.daemon.stacks import log_stacks
from memed.logs import configure_logging

T0_MIN = 29_000_000  # epoch minutes, 2025-02
PUBLISHER = r"""
import asyncio, sys, time, json, aiomqtt
from memed.daemon.mqtt import publish_many
port, path, pace = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
minutes = [json.loads(line) for line in open(path)]
async def main():
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=0) as c:
        print("ready", flush=True)  # connected: the clock starts when the benchmark answers
        sys.stdin.readline()
        start = time.perf_counter()
        for k, msgs in enumerate(minutes):
            todo = [("memed/ticks/batch", m.encode()) for m in msgs]
            for attempt in range(5):  # unacknowledged within 30 s: sent again (QoS 1), said on stderr
                todo = [todo[i] for i in await publish_many(c, todo)]
                if not todo:
                    break
                print(f"minute {k}: {len(todo)} messages unacknowledged (attempt {attempt + 1})",
                      file=sys.stderr, flush=True)
            else:
                sys.exit(f"minute {k}: {len(todo)} messages never acknowledged")
            if pace > 0:
                await asyncio.sleep(max(0.0, start + (k + 1) * pace - time.perf_counter()))
asyncio.run(main())
"""


async def publish(port: int, path: Path, pace: float) -> float:
    """Run the publisher process over ``path``; returns the clock when it had connected and began (its
    interpreter's start-up and imports are not part of any figure)."""
    pub = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER, str(port), str(path), str(pace),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert pub.stdin is not None
    assert pub.stdout is not None
    assert pub.stderr is not None
    assert (await pub.stdout.readline()).strip() == b"ready"
    began = time.perf_counter()
    pub.stdin.write(b"go\n")
    await pub.stdin.drain()
    err = (await pub.stderr.read()).decode()
    if await pub.wait():  # minutes it never sent would be waited for forever
        raise RuntimeError(f"the publisher failed:\n{err}")
    if err:
        print(err, end="", file=sys.stderr)
    return began


async def until(done: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait for ``done()``; past ``seconds``, log every task's stack and fail saying ``what`` was awaited."""
    deadline = time.perf_counter() + seconds
    while not done():
        if time.perf_counter() > deadline:
            log_stacks()
            raise TimeoutError(f"{what}: not done after {seconds:.0f} s (stacks logged above)")
        await asyncio.sleep(0.005)


def market(tokens: int, minutes: int, seed: int = 0) -> np.ndarray:
    """(minutes, tokens, 5) open, high, low, close, volume of random-walk memecoins with tick sizes."""
    rng = np.random.default_rng(seed)
    logp = np.cumsum(rng.normal(0, 0.01, (minutes, tokens)), axis=0) + rng.uniform(-8, 0, tokens)
    close = np.round(np.exp(logp), 9) + 1e-9
    open_ = np.vstack([close[:1], close[:-1]])
    spread = np.abs(rng.normal(0, 0.003, (minutes, tokens)))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    volume = rng.lognormal(5, 1.5, (minutes, tokens))
    return np.stack([open_, high, low, close, volume], axis=-1)


def payloads(bars: np.ndarray, names: list[str], first_minute: int, columns: bool) -> list[list[str]]:
    out = []
    for k in range(bars.shape[0]):
        ts = (first_minute + k) * 60
        if columns:
            chunk = 5000
            fields = dict(zip(("open", "high", "low", "close", "volume"), bars[k].T.tolist(), strict=True))
            parts = []
            for i in range(0, len(names), chunk):
                body = {"token": names[i : i + chunk], "ts": [ts] * len(names[i : i + chunk])}
                parts.append(
                    msgspec.json.encode(body | {f: v[i : i + chunk] for f, v in fields.items()}).decode()
                )
            out.append(parts)
            continue
        chunk = 500
        ticks = [
            {"token": t, "ts": ts, "open": b[0], "high": b[1], "low": b[2], "close": b[3], "volume": b[4]}
            for t, b in zip(names, bars[k].tolist(), strict=True)
        ]
        out.append([msgspec.json.encode(ticks[i : i + chunk]).decode() for i in range(0, len(ticks), chunk)])
    return out


async def one_size(tokens: int, warmup: int, minutes: int, flood: int, pace: float, broker: Mosquitto,
                   columns: bool, signals: str, publish_hold: str) -> dict[str, float]:  # fmt: skip
    batch_signals = signals != "per-token"
    bars = market(tokens, warmup + minutes + flood)
    names = [f"TOK{i:05d}" for i in range(tokens)]
    cfg = MemedConfig()
    d = msgspec.structs.replace(
        cfg.daemon, registry=str(DEMO_MODELS), broker_url=broker.url, http_port=0, checkpoint_path="",
        batch_wait_seconds=10.0, client_id=f"bench-{tokens}",
        signal_topic_prefix="" if batch_signals else "memed/signals",
        signal_batch_topic="memed/signals_batch" if batch_signals else "", publish_hold=publish_hold,
        signal_batch_format="arrow" if signals == "batch-arrow" else "json",
    )  # fmt: skip
    daemon = Daemon(msgspec.structs.replace(cfg, daemon=d))
    warm_times = []
    for k in range(warmup):
        x = np.full((9, tokens), np.nan)
        x[:5] = bars[k].T
        t = time.perf_counter()
        daemon.path.process(names, float(T0_MIN + k), x)
        warm_times.append(time.perf_counter() - t)
    daemon.batcher.load_state(BatcherState(T0_MIN + warmup - 1, {}, names))
    with tempfile.TemporaryDirectory() as tmp:
        paced, floods = Path(tmp) / "paced.jsonl", Path(tmp) / "flood.jsonl"
        for path, part, first in ((paced, bars[warmup : warmup + minutes], T0_MIN + warmup),
                                  (floods, bars[warmup + minutes :], T0_MIN + warmup + minutes)):  # fmt: skip
            path.write_text("\n".join(json.dumps(m) for m in payloads(part, names, first, columns)) + "\n")
        # kill -USR1 <pid>: where every task waits (a run that stops making progress)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_stacks)
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(daemon.run())
            await daemon.subscribed.wait()
            await publish(broker.port, paced, pace)
            # each minute's signals acknowledged on MQTT
            await until(lambda: len(daemon.recent_latencies) >= minutes, 60 + pace, "the paced signals")
            latencies = np.array(daemon.recent_latencies)
            t0 = await publish(broker.port, floods, 0.0)
            await until(lambda: len(daemon.recent_latencies) >= minutes + flood, 60 + flood * pace,
                        "the flood minutes' signals")  # fmt: skip
            flood_s = time.perf_counter() - t0
            daemon.stop()
            await run
    sink = "mqtt_batch" if batch_signals else "mqtt"
    sent = daemon.metrics.sink_counts().get((sink, "sent"), 0.0)
    return {
        "tokens": tokens,
        "direct_path_p50_ms": 1e3 * float(np.median(warm_times[warmup // 2 :])),
        "latency_p50_ms": 1e3 * float(np.percentile(latencies, 50)),
        "latency_p99_ms": 1e3 * float(np.percentile(latencies, 99)),
        "latency_max_ms": 1e3 * float(latencies.max()),
        "sustained_ticks_per_s": tokens * flood / flood_s,
        "minutes_measured": float(len(latencies)),
        "published_per_minute": sent / (minutes + flood),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument(
        "--warmup", type=int, default=80, help="minutes of history run first (models need warm state)"
    )
    ap.add_argument("--minutes", type=int, default=20, help="paced minutes for the latency figures")
    ap.add_argument("--flood", type=int, default=10, help="back-to-back minutes for the throughput figure")
    ap.add_argument(
        "--pace", type=float, default=0.0, help="seconds between paced minutes (0: 1 s + 0.2 s per 1k tokens)"
    )
    ap.add_argument("--payload", choices=["rows", "columns"], default="rows")
    ap.add_argument("--signals", choices=["per-token", "batch", "batch-arrow"], default="per-token")
    ap.add_argument("--publish-hold", choices=["always", "changes"], default="always")
    args = ap.parse_args()
    configure_logging("warning", "console")
    print(f"ticks as {args.payload}, signals {args.signals}, publish_hold {args.publish_hold}")
    for n in args.tokens:
        pace = args.pace or 1.0 + 0.2 * n / 1000
        columns = args.payload == "columns"
        # a broker per size: nothing one size's sessions left behind can queue or slow the next
        with tempfile.TemporaryDirectory() as tmp:
            broker = Mosquitto(Path(tmp))
            broker.start()
            try:
                r = asyncio.run(one_size(n, args.warmup, args.minutes, args.flood, pace, broker, columns,
                                         args.signals, args.publish_hold))  # fmt: skip
            finally:
                broker.stop()
        print(f"{n:>6} tokens: tick->signal p50 {r['latency_p50_ms']:7.1f} ms  "
              f"p99 {r['latency_p99_ms']:7.1f} ms"
              f"  max {r['latency_max_ms']:7.1f} ms  over {int(r['minutes_measured'])} minutes"
              f" ({r['published_per_minute']:,.0f} signals published a minute) | "
              f"decision path alone p50 {r['direct_path_p50_ms']:6.1f} ms | "
              f"sustained {r['sustained_ticks_per_s']:,.0f} ticks/s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
