"""Crash-recovery costs at scale: the checkpoint (snapshot on the event loop, write in a worker thread,
read and restore at start-up) and the tick journal (append per message, fsync per second).

For each token count the decision path of the packaged model set (default config) is run over a few
minutes of that many synthetic tokens, then a checkpoint is taken, written, read back and restored, and
one minute of per-tick messages is journalled and replayed. Medians of ``--repeat`` rounds.

    python benchmarks/checkpoint.py --tokens 1000 10000 50000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from memed.config import MemedConfig
from memed.daemon.checkpoint import BatcherState, Checkpoint, read_checkpoint, write_checkpoint
from memed.daemon.demo import DEMO_MODELS
from memed.daemon.journal import TickJournal, replay
from memed.decision import DecisionPath
from memed.logs import configure_logging
from memed.models.registry import load_model_set

T0 = 29_000_000.0
MINUTES = 3


def _bars(n: int, rng: np.random.Generator) -> np.ndarray:
    close = np.exp(rng.normal(0.0, 1.0, n))
    bars = np.full((9, n), np.nan)
    bars[0], bars[1], bars[2], bars[3], bars[4] = close, close * 1.001, close * 0.999, close, 100.0
    return bars


def one(n: int, folder: Path) -> dict[str, float]:
    cfg = MemedConfig()
    ms = load_model_set(DEMO_MODELS)
    path = DecisionPath(ms, cfg.signals, cfg.risk)
    tokens = [f"TOKEN{i:06d}" for i in range(n)]
    rng = np.random.default_rng(0)
    for m in range(MINUTES):
        path.process(tokens, T0 + m, _bars(n, rng))
    ck_path = folder / f"ck-{n}.bin"
    t = time.perf_counter()
    blob = path.snapshot()
    snap = time.perf_counter() - t
    ck = Checkpoint(
        blob, BatcherState(int(T0) + MINUTES - 1, dict.fromkeys(tokens, int(T0) + MINUTES - 1)), 1
    )
    t = time.perf_counter()
    write_checkpoint(ck_path, ck)
    write = time.perf_counter() - t
    t = time.perf_counter()
    back = read_checkpoint(ck_path)
    DecisionPath.restore(ms, cfg.signals, cfg.risk, back.pipeline)
    restore = time.perf_counter() - t
    payloads = [
        json.dumps({"token": tok, "ts": int((T0 + MINUTES) * 60), "close": 1.0}).encode() for tok in tokens
    ]
    journal = TickJournal(folder / f"j-{n}.bin", 0)
    t = time.perf_counter()
    for body in payloads:
        journal.append(body, 0.0)
    append = time.perf_counter() - t
    t = time.perf_counter()
    journal.fsync()
    fsync = time.perf_counter() - t
    journal.close()
    t = time.perf_counter()
    replayed = sum(1 for _ in replay(folder / f"j-{n}.bin", 0))
    read = time.perf_counter() - t
    assert replayed == n
    size = float(ck_path.stat().st_size)
    return {"snapshot_s": snap, "write_s": write, "restore_s": restore, "bytes": size,
            "journal_append_s": append, "journal_fsync_s": fsync, "journal_replay_s": read}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1000, 10000, 50000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    configure_logging("warning")
    print(f"{'tokens':>7} {'snapshot':>9} {'write':>8} {'restore':>8} {'MB':>6} {'append/min':>11} "
          f"{'fsync':>7} {'replay':>7}")  # fmt: skip
    for n in args.tokens:
        rounds = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                rounds.append(one(n, Path(tmp)))
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        ms = {k: v * 1e3 for k, v in med.items()}
        print(f"{n:>7,} {ms['snapshot_s']:>7.1f}ms {ms['write_s']:>6.1f}ms {ms['restore_s']:>6.1f}ms "
              f"{med['bytes'] / 1e6:>6.2f} {ms['journal_append_s']:>9.1f}ms {ms['journal_fsync_s']:>5.1f}ms "
              f"{ms['journal_replay_s']:>5.1f}ms")  # fmt: skip


if __name__ == "__main__":
    main()
