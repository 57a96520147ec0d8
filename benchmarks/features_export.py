"""`memed features compute` end to end: throughput and peak memory, the streaming export (token groups
through the kernel into Parquet row groups, float64 and float32) beside the whole-frame way it used to
work (load everything, compute one frame, write it), each in a fresh process, in one run.

Inputs: the real binance-spot-5m-universe (2.51 M bars) imported to one Parquet file and as its freqtrade
folder of feather files, and synthetic markets of 2 M and 20 M bars (written token group by token group,
so making them needs little memory; with ``--folders`` also as folders of 200-token Parquet files).
Throughput excludes start-up (imports, compiled-kernel load): from reading the first bar to the file
closed. First it prints the kernel's own speed on the universe's bars in memory, 1 thread and all: the
machine's speed of the hour, to read the figures against. Peak RSS is the worker process's own
high-water mark (``VmHWM``: ``ru_maxrss`` would report the benchmark's own RSS, kept across the fork and
exec that start the worker).

    python benchmarks/features_export.py [--sizes 2 20] [--skip-old-above 5] [--repeat 1] [--folders]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from memed.data import load_dataset, synth_market, write_dataset
from memed.data.groups import file_groups, parquet_groups
from memed.data.loaders import validate_file_frame
from memed.data.schema import Rejections
from memed.data.select import Selection
from memed.features import build_spec, compute_features
from memed.features.batch import compute_raw
from memed.features.export import GROUP_ROWS, export_features

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-spot-5m-universe"


def worker(mode: str, src: Path, out: Path) -> None:
    """One measurement, in this (fresh) process: prints a JSON line."""
    spec = build_spec(5 if "universe" in src.name else 1)
    # the compiled kernels loaded before the clock starts (start-up is excluded from the figures) — and on
    # the first run after an install or a kernel change compiled (numba's cache: seconds, not a throughput)
    tiny = synth_market(2, 300, seed=0)
    if mode == "old":
        compute_features(tiny, build_spec(1))
    else:
        warm = out.with_name(f"warm-{out.name}")  # not `out`: a rename over a file costs a flush on ext4
        export_features(iter([(tiny, Rejections())]), build_spec(1), warm, float32=mode == "float32")
        warm.unlink()
    t0 = time.perf_counter()
    if mode == "old":
        bars, _ = load_dataset([src])
        rows = bars.height
        write_dataset(compute_features(bars, spec), out)
    else:
        groups = (
            file_groups([src], Selection(), GROUP_ROWS).frames()  # a folder: a group of files at a time
            if src.is_dir()
            else parquet_groups(src, Selection(), GROUP_ROWS, lambda f: validate_file_frame(f, src))
        )
        rows = export_features(groups, spec, out, float32=mode == "float32").rows
    seconds = time.perf_counter() - t0
    rss = peak_rss_mb()
    print(json.dumps({"rows": rows, "seconds": seconds, "rss_mb": rss, "mb_out": out.stat().st_size / 1e6}))


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started: ``VmHWM`` where Linux has it. (A process
    started by fork and exec inherits its parent's ``ru_maxrss``: Linux carries the high-water mark across
    exec, so a small worker of a large parent reports the parent's RSS.)"""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(rows: int, path: Path, folder: bool = False) -> None:
    """A 1-minute market of ``rows`` bars (2,000-minute tokens), written 200 tokens at a time: into one
    Parquet file, or with ``folder`` one file each into the folder ``path``."""
    minutes, per = 2_000, 200
    writer = None
    for k in range(rows // (minutes * per)):
        frame = synth_market(per, minutes, seed=k).with_columns(token=pl.lit(f"G{k:04d}_") + pl.col("token"))
        if folder:
            write_dataset(frame, path / f"part-{k:04d}.parquet")
            continue
        table = frame.to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
    if writer is not None:
        writer.close()


def rows_of(src: Path) -> int:
    """Bars in a Parquet file, or in a folder's Parquet and feather files."""
    files = sorted(src.iterdir()) if src.is_dir() else [src]
    scans = [pl.scan_ipc(f) if f.suffix == ".feather" else pl.scan_parquet(f) for f in files]
    return sum(int(s.select(pl.len()).collect().item()) for s in scans)


def measure(mode: str, src: Path, tmp: Path) -> dict[str, float]:
    res = subprocess.run([sys.executable, __file__, "--worker", mode, str(src), str(tmp / f"{mode}.parquet")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine_speed(bars: pl.DataFrame) -> None:
    """The kernel alone on the same bars (in memory, no reading or writing; best of three): the figures
    below read against it, since this machine's speed differs from hour to hour (up to twice)."""
    spec = build_spec(5)
    compute_raw(bars, spec, threads=1)  # the compiled kernel loaded
    threads = os.cpu_count() or 1
    best = {}
    for n in (1, threads):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            compute_raw(bars, spec, threads=n)
            times.append(time.perf_counter() - t0)
        best[n] = bars.height / min(times) / 1e6
    print(
        f"this machine now: the kernel alone on the universe's bars {best[1]:.2f} M token-min/s on 1 "
        f"thread, {best[threads]:.2f} on {threads}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="*", default=[2, 20], help="Synthetic sizes, M bars.")
    ap.add_argument("--skip-old-above", type=float, default=5, help="No whole-frame run above this, M bars.")
    ap.add_argument("--repeat", type=int, default=1, help="Runs of each way (each in a fresh process).")
    ap.add_argument("--folders", action="store_true", help="Each synthetic size also as a folder of files.")
    ap.add_argument("--worker", nargs=3, metavar=("MODE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))
        return
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cases: list[tuple[str, Path]] = []
        if DATA.exists():
            bars, _ = load_dataset([DATA])
            machine_speed(bars)
            write_dataset(bars, tmp / "universe.parquet")
            cases.append(
                (f"binance-spot-5m-universe, {bars.height / 1e6:.2f} M bars", tmp / "universe.parquet")
            )
            cases.append(("  the same, its freqtrade folder", DATA))  # 39 feather files, read as they are
            del bars
        else:
            print(f"(the shared data is not here: {DATA}; synthetic cases only)")
        for size in args.sizes:
            path = tmp / f"synth-{size:g}M.parquet"
            synthetic(int(size * 1e6), path)
            cases.append((f"synthetic, {rows_of(path) / 1e6:.1f} M bars", path))
            if args.folders:
                synthetic(int(size * 1e6), tmp / f"synth-{size:g}M", folder=True)
                cases.append(("  the same, a folder of files", tmp / f"synth-{size:g}M"))
        os.sync()  # the inputs just written go to disk now, not during the first measurement
        print(f"{'input':<40}{'way':<22}{'M token-min/s':>14}{'seconds':>9}{'peak RSS MB':>13}{'out MB':>8}")
        ways = {"stream": "streaming, float64", "float32": "streaming, float32", "old": "whole frame"}
        for name, src in cases:
            rows = rows_of(src)
            modes = ["stream", "float32"] + (["old"] if rows <= args.skip_old_above * 1e6 else [])
            for mode in (m for m in modes for _ in range(args.repeat)):
                r = measure(mode, src, tmp)
                print(f"{name:<40}{ways[mode]:<22}{r['rows'] / r['seconds'] / 1e6:>14.2f}{r['seconds']:>9.2f}"
                      f"{r['rss_mb']:>13.0f}{r['mb_out']:>8.0f}", flush=True)  # fmt: skip
                (tmp / f"{mode}.parquet").unlink()
                os.sync()


if __name__ == "__main__":
    main()
