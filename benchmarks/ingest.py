"""Tick decoding and validation, one core: today's row form (a JSON array of tick objects, parsed one
Python object at a time) beside the column batch (typed arrays, validated with array operations), in one
run, on messages of ``--ticks`` ticks (distinct tokens, every field present), best of ``--repeat``.

    python benchmarks/ingest.py [--ticks 1000 10000 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import msgspec
import numpy as np

from memed.daemon.columns import decode_columns, decode_payload
from memed.daemon.ticks import decode_message

NOW = 1_767_225_600.0


def messages(n: int) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(0)
    close = np.exp(rng.normal(-5, 2, n))
    volume = rng.integers(0, 10**6, n).tolist()
    rows = [{"token": f"TOKEN{i:06d}", "ts": NOW - 60, "open": c * 0.999, "high": c * 1.002, "low": c * 0.998,
             "close": c, "volume": float(v), "liquidity": 5e4}
            for i, (c, v) in enumerate(zip(close.tolist(), volume, strict=True))]  # fmt: skip
    keys = list(rows[0])
    return msgspec.json.encode(rows), msgspec.json.encode({k: [r[k] for r in rows] for k in keys})


def best(repeat: int, fn: Callable[[], object]) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, nargs="*", default=[1000, 10_000, 50_000])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'ticks/message':>14}{'row form':>16}{'columns':>16}{'columns + Tick':>18}   (ticks/s, one core)")
    for n in args.ticks:
        rows, cols = messages(n)
        got = decode_columns(cols, NOW, 120.0)
        assert len(got) == n  # type: ignore[arg-type]  # every tick valid, both ways
        assert (
            sum(1 for t in decode_message(rows, NOW, 120.0, max_bytes=2**30) if type(t).__name__ == "Tick")
            == n
        )
        a = best(args.repeat, lambda rows=rows: decode_message(rows, NOW, 120.0, max_bytes=2**30))
        b = best(args.repeat, lambda cols=cols: decode_columns(cols, NOW, 120.0))
        c = best(args.repeat, lambda cols=cols: decode_payload(cols, NOW, 120.0, max_bytes=2**30))
        print(f"{n:>14,}{n / a:>16,.0f}{n / b:>16,.0f}{n / c:>18,.0f}   {a / b:.1f} x")


if __name__ == "__main__":
    main()
