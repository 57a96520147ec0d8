"""A dataset read in token groups of bounded size, so that whatever the dataset's size only a few groups
are in memory (``memed features compute``). A token is never split between groups, and the groups come in
token order, each sorted by token and time: together they are exactly the canonical frame
:func:`~memed.data.load_dataset` would build whole.

* one Parquet file: each group's rows only, through a lazy scan (:func:`parquet_groups`);
* any other sources — a freqtrade data folder, CSV, feather, JSON files (:func:`file_groups`): a first
  pass reads each file once, one at a time, for its tokens and row count (and applies every check
  :func:`load_dataset` applies: skipped files, mixed bar intervals); files that share a token, or whose
  token ranges interleave, go to the same group; a group's files are read again when its turn comes;
* a frame already in memory (:func:`frame_groups`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from memed.data.frames import token_starts
from memed.data.loaders import check_files, expand_sources, note_interval, read_selected
from memed.data.schema import Rejections, validate_bars
from memed.data.select import Selection
from memed.errors import DataError

Group = tuple[pl.DataFrame, Rejections]
Validate = Callable[[pl.DataFrame], Group]


def token_spans(sizes: list[int], group_rows: int) -> Iterator[tuple[int, int]]:
    """Consecutive items (``[first, stop)`` indices into ``sizes``, their bar counts) in groups of at
    most ``group_rows`` bars — or one item, when an item alone has more."""
    start = 0
    while start < len(sizes):
        stop, rows = start, 0
        while stop < len(sizes) and (rows == 0 or rows + sizes[stop] <= group_rows):
            rows += sizes[stop]
            stop += 1
        yield start, stop
        start = stop


def parquet_groups(path: Path, select: Selection, group_rows: int, validate: Validate) -> Iterator[Group]:
    """A canonical Parquet dataset in token groups: each group's rows only, validated (``validate``
    returns them sorted by token, ts, as :func:`~memed.data.schema.validate_bars` does) and selected."""
    scan = pl.scan_parquet(path)
    runs = (
        scan.select("token").with_row_index("row").group_by("token")
        .agg(first=pl.col("row").min(), last=pl.col("row").max(), n=pl.len()).sort("token").collect()
    )  # fmt: skip
    tokens, sizes, first = runs["token"].to_list(), runs["n"].to_list(), runs["first"].to_list()
    # a file written sorted by token (as memed writes them) is read by row ranges: no filter to evaluate,
    # no row group decoded twice
    ranges = bool((runs["last"] - runs["first"] + 1 == runs["n"]).all() and runs["first"].is_sorted())
    for a, b in token_spans(sizes, group_rows):
        mine = tokens[a:b]  # rows without a token (a group of their own) are validated, i.e. counted, too
        part = (
            scan.slice(first[a], sum(sizes[a:b]))
            if ranges
            else scan.filter(pl.col("token").is_in(mine) | (pl.col("token").is_null() & (None in mine)))
        )
        frame, rej = validate(part.collect())
        yield select.filter(frame), rej


def frame_groups(bars: pl.DataFrame, group_rows: int) -> Iterator[Group]:
    """An in-memory canonical frame (sorted by token, ts) in token groups."""
    starts = token_starts(bars["token"]).tolist()
    for a, b in token_spans([e - s for s, e in itertools.pairwise(starts)], group_rows):
        yield bars.slice(starts[a], starts[b] - starts[a]), Rejections()


@dataclass
class FilePlan:
    """What the first pass over the files found: the groups' files, in token order, the rows each group
    holds (before the checks across files), and what reading counted (skipped files, rejected rows)."""

    groups: list[list[Path]]
    rows: list[int]
    interval: int
    """The bar interval: the most common step between a token's bars over every file, as
    :func:`~memed.data.schema.infer_interval_minutes` finds it in the merged frame (1 when no token has
    two bars)."""
    rejections: Rejections
    select: Selection

    def frames(self) -> Iterator[Group]:
        """Each group's files read again, merged and validated (the rejections a group adds are those
        between its files, such as a bar repeated in two of them: each file's own were counted once)."""
        for paths in self.groups:
            frames = []
            for path in paths:
                kept = read_selected(path, self.select, Rejections())
                if kept is not None:
                    frames.append(kept[0])
            yield validate_bars(pl.concat(frames, how="vertical"))


def file_groups(sources: Iterable[str | Path], select: Selection, group_rows: int,
                on_file: Callable[[int, int], None] | None = None) -> FilePlan:  # fmt: skip
    """Plan the groups of ``sources`` (files and folders of them): each file read once for its tokens and
    rows (``on_file(done, files)`` after each); :class:`~memed.errors.DataError` for what
    :func:`load_dataset` refuses."""
    total = Rejections()
    intervals: dict[str, set[int]] = {}
    spans: list[tuple[str, str, int, Path]] = []  # first token, last token, rows, file
    kept = 0
    steps: Counter[int] = Counter()
    paths = expand_sources(sources)
    for done, path in enumerate(paths, 1):
        got = read_selected(path, select, total)
        if on_file is not None:
            on_file(done, len(paths))
        if got is None:
            continue
        frame, interval = got
        kept += 1
        note_interval(intervals, frame, interval)
        steps.update(_steps(frame))
        if frame.height:
            spans.append((str(frame["token"].min()), str(frame["token"].max()), frame.height, path))
    check_files(kept, intervals, select, total)
    if not spans:
        raise DataError(f"no bars left after the selection ({select.describe()})")
    # files whose token ranges overlap (a token in several files included) belong together
    spans.sort(key=lambda s: (s[0], s[1]))
    merged: list[tuple[str, int, list[Path]]] = []  # last token, rows, files
    for first, last, rows, path in spans:
        if merged and first <= merged[-1][0]:
            end, total_rows, files = merged[-1]
            merged[-1] = (max(end, last), total_rows + rows, [*files, path])
        else:
            merged.append((last, rows, [path]))
    groups: list[list[Path]] = []
    sizes: list[int] = []
    for a, b in token_spans([m[1] for m in merged], group_rows):
        groups.append([p for m in merged[a:b] for p in m[2]])
        sizes.append(sum(m[1] for m in merged[a:b]))
    # the most common step, the smallest of ties
    interval = min(steps, key=lambda s: (-steps[s], s)) if steps else 1
    return FilePlan(groups, sizes, interval, total, select)


def _steps(frame: pl.DataFrame) -> Counter[int]:
    """How often each positive step (minutes) between a token's consecutive bars occurs in ``frame``."""
    step = (pl.col("ts").diff().over("token").dt.total_seconds() // 60).alias("step")
    counts = frame.select(step).filter(pl.col("step") > 0).to_series().value_counts()
    return Counter(dict(zip(counts[:, 0].cast(pl.Int64).to_list(), counts[:, 1].to_list(), strict=True)))
