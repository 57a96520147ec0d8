"""The batch driver: the kernel's step in a compiled loop over whole histories."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
from numba import njit

from memed.data.bars import BUYS, CLOSE, HIGH, LIQUIDITY, LOW, MARKET_CAP, OPEN, SELLS, VOLUME
from memed.data.frames import bar_matrix, epoch_minutes, token_starts
from memed.data.schema import infer_interval_minutes
from memed.features.kernel import N_OUT, STATUS_STALE, advance, initial_state
from memed.features.layout import N
from memed.features.market import market_over_history, market_params
from memed.features.spec import FeatureSpec, build_spec


@njit(cache=True, inline="always")
def _run_span(s: np.ndarray, lo: int, hi: int, ts: np.ndarray, x: np.ndarray, p: np.ndarray, out: np.ndarray,
              status: np.ndarray, nbars: np.ndarray) -> None:  # fmt: skip
    """Rows ``lo .. hi`` of one token, in time order, continuing the token's state ``s``."""
    for i in range(lo, hi):
        status[i] = advance(s, out[i], p, ts[i], x[OPEN, i], x[HIGH, i], x[LOW, i], x[CLOSE, i], x[VOLUME, i],
                            x[LIQUIDITY, i], x[BUYS, i], x[SELLS, i], x[MARKET_CAP, i])  # fmt: skip
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


TILE = 64
"""Rows the column driver steps into its scratch before writing them out as columns (one validity-bitmap
word per column)."""


@njit(cache=True, nogil=True)
def run_columns(starts: np.ndarray, ts: np.ndarray, x: np.ndarray, p: np.ndarray, init: np.ndarray,
                cols: np.ndarray, warm: np.ndarray, out: np.ndarray, bits: np.ndarray,
                nulls: np.ndarray) -> None:  # fmt: skip
    """The batch driver writing Arrow-ready columns, for the rows ``starts[0] .. starts[-1]`` of ``ts`` and
    ``x``: every token (rows ``starts[g] .. starts[g+1]``) from a fresh state, kernel column ``cols[j]`` of
    the ``r``-th row to ``out[j, r]`` (float64 or float32: a contiguous column per feature), NaN where the
    bar is fewer than ``warm[j]`` bars into its segment (the seeded averages' convergence, as
    :meth:`FeatureSpec.mask_converging`), bit ``r`` of ``bits[j]`` set where the value is not NaN,
    ``nulls[j]`` counting the NaNs.

    The kernel steps ``TILE`` rows into a small column-major scratch (cache-resident: the step writes a
    bar's row down a column of it) and each of the scratch's rows is then copied out, whole cache lines
    read and written: stepping straight into 49 column streams was about a third slower, and a row-major
    scratch, read down its columns when copied out, 7 % slower. The values are the step's own, bit for
    bit."""
    lo = starts[0]
    n = starts[-1] - lo
    tile = np.empty((N_OUT, TILE))
    nb = np.empty(TILE)
    s = init.copy()
    g = 0
    for t0 in range(0, n, TILE):
        t1 = min(t0 + TILE, n)
        for r in range(t1 - t0):
            i = lo + t0 + r
            while i == starts[g + 1]:  # the next token's first row (past any empty token)
                g += 1
                s[:] = init
            row = tile[:, r]
            status = advance(s, row, p, ts[i], x[OPEN, i], x[HIGH, i], x[LOW, i], x[CLOSE, i], x[VOLUME, i],
                             x[LIQUIDITY, i], x[BUYS, i], x[SELLS, i], x[MARKET_CAP, i])  # fmt: skip
            if status == STATUS_STALE:  # (a canonical frame has none)
                row[:] = np.nan
            nb[r] = s[N]
        for j in range(len(cols)):
            col = tile[cols[j]]
            wj = warm[j]
            word = np.uint64(0)
            valid = 0
            for r in range(t1 - t0):
                v = col[r] if nb[r] >= wj else np.nan
                out[j, t0 + r] = v
                if not math.isnan(v):
                    word |= np.uint64(1) << np.uint64(r)
                    valid += 1
            bits[j, t0 // TILE] = word
            nulls[j] += t1 - t0 - valid


def compute_raw(
    bars: pl.DataFrame, spec: FeatureSpec, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the kernel over a canonical frame sorted by token, ts.

    Returns ``(values, status, ready)``: one row per input bar with every kernel output column (NaN
    before warm-up), the gap-rule status per bar, and whether the bar's segment is past the spec's
    warm-up (exactly :meth:`FeatureStream.update`'s ``ready``).
    """
    return run_kernel(token_starts(bars["token"]), epoch_minutes(bars["ts"]), bar_matrix(bars), spec, threads)


def run_kernel(
    starts: np.ndarray,
    ts: np.ndarray,
    x: np.ndarray,
    spec: FeatureSpec,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`compute_raw` on prepared arrays: token offsets, epoch minutes and the (9, rows) bar matrix."""
    n = len(ts)
    out = np.empty((n, spec.width))
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
    if spec.market:
        out[:, N_OUT:] = market_over_history(starts, ts, x[CLOSE], market_params(spec))
    spec.mask_converging(out, nbars)
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
