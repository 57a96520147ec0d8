"""Features of a whole dataset into one Parquet file in bounded memory (``memed features compute``).

Tokens are taken in groups of about ``group_rows`` bars: a group's bars are read (from a Parquet file only
its rows, through a lazy scan), run through the batch kernel, and written as row groups of the output
while the next group is computed — so at most two groups are in memory, whatever the dataset's size, and
the kernel and the writer (both outside the GIL) overlap. A token is never split between groups, so every
value equals the whole-dataset computation's. Cross-sectional market features (``data.market_context``)
need every token of a minute at once: with them the dataset is one group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memed.data.schema import Rejections
from memed.data.select import Selection
from memed.features.batch import compute_raw
from memed.features.spec import FeatureSpec

GROUP_ROWS = 1_000_000
"""Bars per group by default (about 0.5 GB of float64 features in flight with two groups)."""


@dataclass
class ExportStats:
    rows: int = 0
    groups: int = 0
    seconds: float = 0.0
    """From the first group read to the file closed (start-up and the scan of the tokens excluded)."""
    rejections: Rejections | None = None


Validate = Callable[[pl.DataFrame], tuple[pl.DataFrame, Rejections]]


def parquet_groups(path: Path, select: Selection, group_rows: int, validate: Validate
                   ) -> Iterator[tuple[pl.DataFrame, Rejections]]:  # fmt: skip
    """A canonical Parquet dataset in token groups: each group's rows only, validated and selected."""
    scan = pl.scan_parquet(path)
    counts = scan.group_by("token").len().sort("token").collect()
    tokens, sizes = counts["token"].to_list(), counts["len"].to_numpy()
    start = 0
    while start < len(tokens):
        stop, rows = start, 0
        while stop < len(tokens) and (rows == 0 or rows + sizes[stop] <= group_rows):
            rows += int(sizes[stop])
            stop += 1
        group = scan.filter(pl.col("token").is_in(tokens[start:stop])).collect()
        frame, rej = validate(group)
        yield select.filter(frame).sort("token", "ts"), rej
        start = stop


def frame_groups(bars: pl.DataFrame, group_rows: int) -> Iterator[tuple[pl.DataFrame, Rejections]]:
    """An in-memory canonical frame (sorted by token, ts) in token groups."""
    token = bars["token"].to_numpy()
    ends = [*(np.flatnonzero(token[1:] != token[:-1]) + 1).tolist(), bars.height]
    start, i = 0, 0
    while start < bars.height:
        stop = start
        while i < len(ends) and (stop == start or ends[i] - start <= group_rows):
            stop = ends[i]
            i += 1
        yield bars.slice(start, stop - start), Rejections()
        start = stop


def _table(group: pl.DataFrame, spec: FeatureSpec, float32: bool, threads: int | None) -> pa.Table:
    values, _, _ = compute_raw(group, spec, threads)
    cols = values[:, spec.columns]
    if float32:
        cols = cols.astype(np.float32)
    arrays = [group["token"].to_arrow(), group["ts"].to_arrow()]
    names = ["token", "ts", *spec.names]
    for j in range(cols.shape[1]):  # NaN (warming up) as null, as the in-memory frame has it
        col = cols[:, j]
        arrays.append(pa.array(col, mask=np.isnan(col)))
    return pa.Table.from_arrays(arrays, names=names)


def export_features(groups: Iterator[tuple[pl.DataFrame, Rejections]], spec: FeatureSpec, out: Path, *,
                    float32: bool = False, threads: int | None = None,
                    on_group: Callable[[int], None] | None = None) -> ExportStats:  # fmt: skip
    """Every group's features written to ``out`` (token, ts, one column per feature) as they come."""
    stats = ExportStats(rejections=Rejections())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer: pq.ParquetWriter | None = None
    pending: Future[None] | None = None
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1, thread_name_prefix="memed-parquet") as pool:
        try:
            for group, rej in groups:
                assert stats.rejections is not None
                stats.rejections.merge(rej)
                if not group.height:
                    continue
                table = _table(group, spec, float32, threads)
                if pending is not None:
                    pending.result()  # at most one group waits to be written
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="lz4")
                pending = pool.submit(writer.write_table, table, row_group_size=256 * 1024)
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
