"""Features of a whole dataset into one Parquet file in bounded memory (``memed features compute``).

Tokens are taken in groups of about ``group_rows`` bars: a group's bars are read (from a Parquet file only
its rows, through a lazy scan), run through the batch kernel, and written as row groups of the output
while the next group is computed — so at most two groups are in memory, whatever the dataset's size, and
the kernel and the writer (both outside the GIL) overlap. A token is never split between groups, so every
value equals the whole-dataset computation's. Cross-sectional market features (``data.market_context``)
need every token of a minute at once: with them the dataset is one group.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memed.data.frames import bar_matrix, epoch_minutes, token_starts
from memed.data.schema import Rejections
from memed.data.select import Selection
from memed.features.batch import run_kernel
from memed.features.spec import FeatureSpec

GROUP_ROWS = 250_000
"""Bars per group by default (two sets of buffers, about 400 MB with float64 features)."""
ROW_GROUP = 256 * 1024
"""Rows per Parquet row group of the output."""


@dataclass
class ExportStats:
    rows: int = 0
    groups: int = 0
    seconds: float = 0.0
    """From the first group read to the file closed (start-up and the scan of the tokens excluded)."""
    rejections: Rejections = field(default_factory=Rejections)


Validate = Callable[[pl.DataFrame], tuple[pl.DataFrame, Rejections]]


def token_spans(sizes: list[int], group_rows: int) -> Iterator[tuple[int, int]]:
    """Consecutive tokens (``[first, stop)`` indices into ``sizes``, their bar counts) in groups of at
    most ``group_rows`` bars — or one token, when a token alone has more."""
    start = 0
    while start < len(sizes):
        stop, rows = start, 0
        while stop < len(sizes) and (rows == 0 or rows + sizes[stop] <= group_rows):
            rows += sizes[stop]
            stop += 1
        yield start, stop
        start = stop


def parquet_groups(path: Path, select: Selection, group_rows: int, validate: Validate
                   ) -> Iterator[tuple[pl.DataFrame, Rejections]]:  # fmt: skip
    """A canonical Parquet dataset in token groups: each group's rows only, validated and selected."""
    scan = pl.scan_parquet(path)
    counts = scan.group_by("token").len().sort("token").collect()
    tokens = counts["token"].to_list()
    for a, b in token_spans(counts["len"].to_list(), group_rows):
        frame, rej = validate(scan.filter(pl.col("token").is_in(tokens[a:b])).collect())
        yield select.filter(frame).sort("token", "ts"), rej


def frame_groups(bars: pl.DataFrame, group_rows: int) -> Iterator[tuple[pl.DataFrame, Rejections]]:
    """An in-memory canonical frame (sorted by token, ts) in token groups."""
    starts = token_starts(bars["token"]).tolist()
    for a, b in token_spans([e - s for s, e in itertools.pairwise(starts)], group_rows):
        yield bars.slice(starts[a], starts[b] - starts[a]), Rejections()


class _Columns:
    """Two alternating sets of reused buffers (the kernel's output, column-major, and with ``float32``
    its float32 copy): a group is computed into one set while the other is being written. The kernel
    writes each feature as one contiguous column, so a float64 column goes to Arrow without a copy."""

    def __init__(self, spec: FeatureSpec, float32: bool) -> None:
        self.spec = spec
        self.float32 = float32
        self.values: list[np.ndarray] = [np.empty((spec.width, 0)).T] * 2
        self.narrow: list[np.ndarray] = [np.empty((len(spec.names), 0), np.float32)] * 2

    def table(self, k: int, group: pl.DataFrame, threads: int | None) -> pa.Table:
        n, spec = group.height, self.spec
        if self.values[k].shape[0] < n:
            self.values[k] = np.empty((spec.width, n)).T  # (n, width), each column contiguous
            self.narrow[k] = np.empty((len(spec.names), n if self.float32 else 0), np.float32)
        values, _, _ = run_kernel(token_starts(group["token"]), epoch_minutes(group["ts"]), bar_matrix(group),
                                  spec, threads, self.values[k])  # fmt: skip
        arrays = [group["token"].to_arrow(), group["ts"].to_arrow()]
        kind = pa.float32() if self.float32 else pa.float64()
        for j, c in enumerate(spec.columns):  # NaN (warming up) as null, as the in-memory frame has it
            col = values[:, c]
            if self.float32:
                col = self.narrow[k][j, :n]
                np.copyto(col, values[:, c], casting="same_kind")
            valid = ~np.isnan(col)
            nulls = n - int(np.count_nonzero(valid))
            bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
            arrays.append(pa.Array.from_buffers(kind, n, [bitmap, pa.py_buffer(col)], null_count=nulls))
        return pa.Table.from_arrays(arrays, names=["token", "ts", *spec.names])


def _prefetched(groups: Iterator[tuple[pl.DataFrame, Rejections]], pool: ThreadPoolExecutor
                ) -> Iterator[tuple[pl.DataFrame, Rejections]]:  # fmt: skip
    """``groups`` with the next one read (and validated) in ``pool`` while this one is computed."""
    it = iter(groups)
    nxt: Future[tuple[pl.DataFrame, Rejections] | None] = pool.submit(next, it, None)
    while True:
        got = nxt.result()
        if got is None:
            return
        nxt = pool.submit(next, it, None)
        yield got


def export_features(groups: Iterator[tuple[pl.DataFrame, Rejections]], spec: FeatureSpec, out: Path, *,
                    float32: bool = False, threads: int | None = 1,
                    on_group: Callable[[int], None] | None = None) -> ExportStats:  # fmt: skip
    """Every group's features written to ``out`` (token, ts, one column per feature) as they come: the
    next group is read in one helper thread and the last one written in another while this one is
    computed. ``threads``: the kernel's (1 by default: the pipeline keeps the other cores busy; on 2
    cores a second kernel thread only contends with the reader and the writer)."""
    stats = ExportStats()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer: pq.ParquetWriter | None = None
    pending: Future[None] | None = None
    buffers = _Columns(spec, float32)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1, thread_name_prefix="memed-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="memed-write") as pool:  # fmt: skip
        try:
            for group, rej in _prefetched(groups, reader):
                stats.rejections.merge(rej)
                if not group.height:
                    continue
                table = buffers.table(stats.groups % 2, group, threads)
                if pending is not None:
                    pending.result()  # the other buffers are free again
                if writer is None:
                    # features are noise to a compressor (10 % smaller with snappy, at 3 x the writing
                    # time): written plain, statistics only on the keys
                    writer = pq.ParquetWriter(tmp, table.schema, compression="none", use_dictionary=["token"],
                                              write_statistics=["token", "ts"])  # fmt: skip
                pending = pool.submit(writer.write_table, table, row_group_size=ROW_GROUP)
                stats.rows += group.height
                stats.groups += 1
                if on_group is not None:
                    on_group(stats.rows)
            if pending is not None:
                pending.result()
        finally:
            if writer is not None:
                writer.close()
    if writer is None:
        raise ValueError("no bars to compute features of")
    tmp.replace(out)
    stats.seconds = time.perf_counter() - t0
    return stats
