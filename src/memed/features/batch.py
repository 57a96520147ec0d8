"""The batch driver: the kernel's step in a compiled loop over whole histories."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
from numba import njit

from memed.data.schema import infer_interval_minutes
from memed.features.kernel import N_OUT, STATUS_STALE, advance, initial_state
from memed.features.layout import N
from memed.features.spec import FeatureSpec, build_spec

BAR_INPUTS = ("open", "high", "low", "close", "volume", "liquidity", "buys", "sells", "market_cap")


@njit(cache=True, inline="always")
def _run_span(s: np.ndarray, lo: int, hi: int, ts: np.ndarray, x: np.ndarray, p: np.ndarray, out: np.ndarray,
              status: np.ndarray, nbars: np.ndarray) -> None:  # fmt: skip
    """Rows ``lo .. hi`` of one token, in time order, continuing the token's state ``s``."""
    for i in range(lo, hi):
        status[i] = advance(s, out[i], p, ts[i], x[0, i], x[1, i], x[2, i], x[3, i], x[4, i], x[5, i],
                            x[6, i], x[7, i], x[8, i])  # fmt: skip
        nbars[i] = s[N]


@njit(cache=True, nogil=True)
def _run_groups(spans: np.ndarray, ts: np.ndarray, x: np.ndarray, p: np.ndarray, init: np.ndarray,
                out: np.ndarray, status: np.ndarray, nbars: np.ndarray) -> None:  # fmt: skip
    """Each token (rows ``spans[g, 0] .. spans[g, 1]``) from a fresh state.

    Deliberately serial and compiled like the streaming loop: numba's ``parallel=True`` pipeline compiles
    the inlined step differently (floating-point contraction), which broke bit-equality with streaming.
    Parallelism comes from threads running this function on disjoint sets of tokens (it releases the GIL).
    """
    for g in range(len(spans)):
        _run_span(init.copy(), spans[g, 0], spans[g, 1], ts, x, p, out, status, nbars)


@njit(cache=True, nogil=True)
def run_block(bounds: np.ndarray, carry: np.ndarray, continues: bool, ts: np.ndarray, x: np.ndarray,
              p: np.ndarray, init: np.ndarray, out: np.ndarray, status: np.ndarray,
              nbars: np.ndarray) -> None:  # fmt: skip
    """One block of consecutive rows holding whole tokens or pieces of them (token ``g`` is rows
    ``bounds[g] .. bounds[g+1]`` of the block's arrays). The first piece continues ``carry`` (the state its
    token had at the end of the previous block) when ``continues``; every other token starts fresh. On
    return ``carry`` holds the state of the block's last token, for the block after it. Cutting a history
    into blocks this way gives exactly the features of one pass over it."""
    for g in range(len(bounds) - 1):
        s = carry.copy() if (g == 0 and continues) else init.copy()
        _run_span(s, bounds[g], bounds[g + 1], ts, x, p, out, status, nbars)
        if g == len(bounds) - 2:
            carry[:] = s


def epoch_minutes(ts: pl.Series) -> np.ndarray:
    """UTC timestamps as float64 epoch minutes (exact for any realistic date)."""
    return (ts.dt.epoch("s") // 60).cast(pl.Float64).to_numpy()


def run_bounds(keys: np.ndarray) -> np.ndarray:
    """Start offsets of each run of equal consecutive ``keys``, plus ``len(keys)`` at the end
    (``itertools.pairwise`` over it gives each run's slice): minutes of a time-sorted frame, runs of a
    training table."""
    keys = np.asarray(keys)
    bounds: np.ndarray = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1, len(keys)].astype(np.int64)
    return bounds


def bar_matrix(bars: pl.DataFrame) -> np.ndarray:
    """The kernel's inputs as a (9, rows) float64 matrix; null or absent optional columns -> NaN."""
    cols = [
        (pl.col(c) if c in bars.columns else pl.lit(None)).cast(pl.Float64).fill_null(np.nan).alias(c)
        for c in BAR_INPUTS
    ]
    return np.ascontiguousarray(bars.select(cols).to_numpy().T)


def compute_raw(
    bars: pl.DataFrame, spec: FeatureSpec, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the kernel over a canonical frame sorted by token, ts.

    Returns ``(values, status, ready)``: one row per input bar with every kernel output column (NaN
    before warm-up), the gap-rule status per bar, and whether the bar's segment is past the spec's
    warm-up (exactly :meth:`FeatureStream.update`'s ``ready``).
    """
    return run_kernel(token_starts(bars["token"]), epoch_minutes(bars["ts"]), bar_matrix(bars), spec, threads)


def token_starts(tokens: pl.Series) -> np.ndarray:
    """Row offsets where each token's rows begin in a frame sorted by token, plus the row count."""
    lengths = tokens.rle().struct.field("len").to_numpy() if len(tokens) else np.zeros(0, dtype=np.int64)
    starts: np.ndarray = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return starts


@njit(cache=True)
def _times_ascend(starts: np.ndarray, t: np.ndarray) -> bool:
    for g in range(len(starts) - 1):
        for i in range(starts[g] + 1, starts[g + 1]):
            if t[i] < t[i - 1]:
                return False
    return True


def by_token(bars: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """``bars`` sorted by token then time (stably), and :func:`token_starts` of the result. A frame
    already in that order, as loaded datasets are, is returned as it is (checking costs well under a
    millisecond per 100k rows; sorting, a few)."""
    starts = token_starts(bars["token"])
    if not (bars["token"].is_sorted() and _times_ascend(starts, bars["ts"].to_physical().to_numpy())):
        bars = bars.sort("token", "ts", maintain_order=True)
        starts = token_starts(bars["token"])
    return bars, starts


def run_kernel(
    starts: np.ndarray, ts: np.ndarray, x: np.ndarray, spec: FeatureSpec, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`compute_raw` on prepared arrays: token offsets, epoch minutes and the (9, rows) bar matrix."""
    n = len(ts)
    out = np.empty((n, N_OUT))
    status = np.zeros(n, dtype=np.int8)
    nbars = np.zeros(n)
    if n == 0:
        return out, status, np.zeros(n, dtype=bool)
    args = (ts, x, spec.param_vector(), initial_state(), out, status, nbars)
    chunks = _balanced_chunks(starts, threads or os.cpu_count() or 1)
    if len(chunks) == 1:
        _run_groups(chunks[0], *args)
    else:
        with ThreadPoolExecutor(len(chunks) - 1) as pool:  # the calling thread takes the first share
            pending = [pool.submit(_run_groups, ch, *args) for ch in chunks[1:]]
            _run_groups(chunks[0], *args)
            for f in pending:
                f.result()
    ready = (nbars >= spec.warmup_bars) & (status != STATUS_STALE)
    return out, status, ready


def _balanced_chunks(starts: np.ndarray, parts: int) -> list[np.ndarray]:
    """Tokens (``[start, end)`` row spans) shared among up to ``parts`` workers with similar row counts:
    the longest token first, each to the least loaded worker (LPT scheduling; tokens need not be
    neighbours, so three tokens of 48k, 48k and 14k rows split 62k / 48k rather than 96k / 14k)."""
    spans = np.column_stack([starts[:-1], starts[1:]]).astype(np.int64)
    parts = max(1, min(parts, len(spans)))
    if parts == 1:
        return [spans]
    loads = [0] * parts
    members: list[list[int]] = [[] for _ in range(parts)]
    for g in np.argsort(spans[:, 0] - spans[:, 1], kind="stable").tolist():
        k = loads.index(min(loads))
        members[k].append(g)
        loads[k] += int(spans[g, 1] - spans[g, 0])
    return [spans[sorted(m)] for m in members if m]


def to_frame(
    keys: pl.DataFrame, values: np.ndarray, spec: FeatureSpec, ready: np.ndarray | None = None
) -> pl.DataFrame:
    """``token, ts`` and the spec's features (NaN before warm-up becomes null); with ``ready``, a
    boolean ``ready`` column after ``ts``."""
    cols = values[:, spec.columns]
    feats = pl.DataFrame(cols, schema=spec.names, orient="row").fill_nan(None)
    head = keys.select("token", "ts")
    if ready is not None:
        head = head.with_columns(pl.Series("ready", ready, dtype=pl.Boolean))
    return pl.concat([head, feats], how="horizontal")


def compute_features(
    bars: pl.DataFrame,
    spec: FeatureSpec | None = None,
    *,
    gap_fill_max_minutes: int = 15,
    threads: int | None = None,
    with_ready: bool = False,
) -> pl.DataFrame:
    """Features of every bar of a canonical frame (sorted by token, ts), in batch.

    ``spec`` defaults to the spec of the frame's own bar interval with ``gap_fill_max_minutes``.
    ``with_ready`` adds the ``ready`` column: the bar's segment is past the warm-up, so the daemon
    would score it.
    """
    if spec is None:
        spec = build_spec(infer_interval_minutes(bars), gap_fill_max_minutes)
    bars = bars.sort(["token", "ts"], maintain_order=True)
    values, _, ready = compute_raw(bars, spec, threads)
    return to_frame(bars, values, spec, ready if with_ready else None)
