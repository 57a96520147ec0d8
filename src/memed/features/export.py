"""Features of a whole dataset into one Parquet file in bounded memory (``memed features compute``).

Tokens come in groups of about ``group_rows`` bars (:mod:`memed.data.groups`): a group is read and
validated in one helper thread, run through the batch kernel, and written as row groups of the output
in another, while the next groups are read and computed — so a few groups at most are in memory (one
being read, the features of up to three), whatever the dataset's size, and the reader, the kernel and
the writer (all outside the GIL) overlap. A token is never split between groups, so every value equals
the whole-dataset computation's. Cross-sectional market features (``data.market_context``) need every
token of a minute at once: with them the dataset is one group.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memed.data.bars import CLOSE
from memed.data.frames import bar_matrix, epoch_minutes, token_starts
from memed.data.loaders import move_into_place
from memed.data.schema import Rejections
from memed.features.batch import TILE, run_columns
from memed.features.kernel import N_OUT, initial_state
from memed.features.market import market_over_history, market_params
from memed.features.spec import FeatureSpec

GROUP_ROWS = 250_000
"""Bars per group by default (three sets of feature buffers: about 260 MB with 43 float64 features)."""
SETS = 3
"""Sets of reused output buffers: a group is computed into one while up to two earlier groups wait for or
go through the writer (three sets were 5-15 % faster than two: groups differ in size, and a slow write no
longer holds up the next group's kernel; four were no faster)."""
ROW_GROUP = 256 * 1024
"""Rows per Parquet row group of the output."""


@dataclass
class ExportStats:
    rows: int = 0
    groups: int = 0
    rejections: Rejections = field(default_factory=Rejections)


class _Columns:
    """``SETS`` sets of reused buffers, taken in turn (each feature's values as one contiguous row, float64
    or float32, and its validity bitmap): a group is computed into one set while the others are written.
    The column driver writes values, bitmaps and null counts in its one pass, so a column goes to Arrow
    as it is; reused memory is also much faster to fill than fresh pages. A group is cut at token
    boundaries into ``parts`` pieces computed at once (the calling thread takes the first), each its own
    Arrow chunk."""

    def __init__(self, spec: FeatureSpec, float32: bool, pool: ThreadPoolExecutor, parts: int) -> None:
        self.spec = spec
        self.dtype = np.float32 if float32 else np.float64
        self.pool = pool
        self.parts = parts
        cols = spec.columns
        self.kernel = int(np.count_nonzero(cols < N_OUT))
        if (cols[: self.kernel] >= N_OUT).any():
            raise AssertionError("the spec lists a market feature before a kernel feature")
        warm = dict(spec.converging)
        self.warm = np.array([warm.get(int(c), 0) for c in cols[: self.kernel]], dtype=np.int64)
        self.buffers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def table(self, k: int, group: pl.DataFrame) -> pa.Table:
        n, spec = group.height, self.spec
        starts, ts, x = token_starts(group["token"]), epoch_minutes(group["ts"]), bar_matrix(group)
        market = None
        if self.kernel < len(spec.names):  # cross-sectional market features, computed over the whole group
            market = market_over_history(starts, ts, x[CLOSE], market_params(spec))
        cuts = starts[np.searchsorted(starts, np.arange(self.parts + 1) * n / self.parts)].tolist()
        jobs = [
            (k, q, starts, ts, x, market, a, b) for q, (a, b) in enumerate(itertools.pairwise(cuts)) if a < b
        ]
        pending = [self.pool.submit(self._part, *job) for job in jobs[1:]]
        chunks = [self._part(*jobs[0]), *(f.result() for f in pending)]
        arrays = [group["token"].to_arrow(), group["ts"].to_arrow()]
        arrays += [pa.chunked_array([a for c in chunks for a in c[j]]) for j in range(len(spec.names))]
        return pa.Table.from_arrays(arrays, names=["token", "ts", *spec.names])

    def _part(self, k: int, q: int, starts: np.ndarray, ts: np.ndarray, x: np.ndarray,
              market: np.ndarray | None, a: int, b: int) -> list[list[pa.Array]]:  # fmt: skip
        """Rows ``a .. b`` (whole tokens) of a group into buffer set ``k``'s piece ``q``: each feature's
        arrays (:func:`_runs`), NaN (warming up) as null, as the in-memory frame has it."""
        spec, m, n = self.spec, self.kernel, b - a
        words = -(-n // TILE)
        values, bits = self.buffers.get((k, q), (np.empty((0, 0)), np.empty((0, 0))))
        if values.shape[1] < n:
            values = np.empty((len(spec.names), n), self.dtype)
            bits = np.empty((len(spec.names), words), np.uint64)
            self.buffers[k, q] = values, bits
        nulls = np.zeros(len(spec.names), np.int64)
        run_columns(starts[(starts >= a) & (starts <= b)], ts, x, spec.param_vector(), initial_state(),
                    spec.columns[:m], self.warm, values, bits, nulls)  # fmt: skip
        if market is not None:
            for j in range(m, len(spec.names)):
                np.copyto(values[j, :n], market[a:b, spec.columns[j] - N_OUT], casting="same_kind")
                valid = ~np.isnan(values[j, :n])
                bits[j, :words].view(np.uint8)[: -(-n // 8)] = np.packbits(valid, bitorder="little")
                nulls[j] = n - int(np.count_nonzero(valid))
        kind = pa.from_numpy_dtype(self.dtype)
        return [_runs(kind, values[j, :n], bits[j, :words]) for j in range(len(spec.names))]


ALL_VALID = np.uint64(2**64 - 1)
FREE_WORDS = 64
"""The shortest run of null-free validity words (4,096 rows) given to the writer as an array of its own."""


def _runs(kind: pa.DataType, values: np.ndarray, bits: np.ndarray) -> list[pa.Array]:
    """A column's values (and validity words, ``TILE`` rows each) as Arrow arrays: runs of words without
    a null as arrays without a validity bitmap, the others with theirs. Parquet's writer takes a
    bitmap-free array as it is, but goes value by value through one with a bitmap, however few its nulls
    (a feature's are the first bars of each token and segment): 0.98 CPU-s for the universe's float64
    features as one array per column, 0.53 s in runs, the same file. Each array costs the writer
    something too, so a run without nulls shorter than ``FREE_WORDS`` stays in the array around it:
    splitting every run, 2,000-bar tokens (two runs a column each) were written 20 % slower than whole."""
    n = len(values)
    full = bits == ALL_VALID
    if n % TILE:  # the last word's bits past the end are 0
        full[-1] = bits[-1] == np.uint64(2 ** (n % TILE) - 1)
    edges = [0, *(np.flatnonzero(full[1:] != full[:-1]) + 1).tolist(), len(bits)]
    # a short run without nulls stays in the arrays around it: each array costs the writer more than
    # the bitmap costs it over FREE_WORDS words
    long_free = [(w0, w1) for w0, w1 in itertools.pairwise(edges) if full[w0] and w1 - w0 >= FREE_WORDS]
    cuts = sorted({0, len(bits), *(w for run in long_free for w in run)})
    runs = []
    for w0, w1 in itertools.pairwise(cuts):
        r0, r1 = w0 * TILE, min(w1 * TILE, n)
        free = bool(full[w0:w1].all())
        bitmap = None if free else pa.py_buffer(bits[w0:w1])
        runs.append(pa.Array.from_buffers(kind, r1 - r0, [bitmap, pa.py_buffer(values[r0:r1])],
                                          null_count=0 if free else -1))  # fmt: skip
    return runs


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
                    float32: bool = False, kernel_threads: int | None = None,
                    on_group: Callable[[int], None] | None = None) -> ExportStats:  # fmt: skip
    """Every group's features written to ``out`` (token, ts, one column per feature) as they come: the
    next group is read in one helper thread and the last one written in another while this one is
    computed, in ``kernel_threads`` pieces at once (the calling thread and helpers; by default one per
    CPU: on 2 cores, 2 pieces were 5-15 % faster than 1, the reader and writer filling the gaps)."""
    kernel_threads = kernel_threads or os.cpu_count() or 1
    stats = ExportStats()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer: pq.ParquetWriter | None = None
    pending: deque[Future[None]] = deque()
    with (
        ThreadPoolExecutor(1, thread_name_prefix="memed-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="memed-write") as pool,
        ThreadPoolExecutor(max(kernel_threads - 1, 1), thread_name_prefix="memed-kernel") as kernel,
    ):
        buffers = _Columns(spec, float32, kernel, kernel_threads)
        try:
            for group, rej in _prefetched(groups, reader):
                stats.rejections.merge(rej)
                if not group.height:
                    continue
                while len(pending) >= SETS - 1:
                    pending.popleft().result()  # the buffers of the group SETS before are free again
                table = buffers.table(stats.groups % SETS, group)
                if writer is None:
                    # features are noise to a compressor (10 % smaller with snappy, at 3 x the writing
                    # time): written plain, statistics only on the keys, pages filled 64k values at a time
                    # (10 % faster than the default 1,024)
                    writer = pq.ParquetWriter(tmp, table.schema, compression="none", use_dictionary=["token"],
                                              write_statistics=["token", "ts"],
                                              write_batch_size=1 << 16)  # fmt: skip
                pending.append(pool.submit(writer.write_table, table, row_group_size=ROW_GROUP))
                stats.rows += group.height
                stats.groups += 1
                if on_group is not None:
                    on_group(stats.rows)
            while pending:
                pending.popleft().result()
        finally:
            if writer is not None:
                writer.close()
    if writer is None:
        raise ValueError("no bars to compute features of")
    move_into_place(tmp, out)
    return stats
