"""The streaming driver: per-token state advanced one minute-batch at a time, in O(1) per token.

It calls the same compiled :func:`~memed.features.kernel.advance` as the batch driver, so a token fed bar
by bar gets exactly the features the batch driver computes over its history.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from numba import njit

from memed.errors import SnapshotError, SpecMismatchError
from memed.features.batch import bar_matrix, epoch_minutes, run_bounds
from memed.features.kernel import N_OUT, STATUS_OK, STATUS_RESTART, STATUS_STALE, advance, initial_state
from memed.features.layout import LAST_TS, STATE_SIZE, N
from memed.features.spec import FeatureSpec

_MAGIC = b"MEMEDFS1"
_GROW = 4096  # state rows are added in large steps (first touch of fresh memory is slow)


@njit(cache=True)
def _run_rows(states: np.ndarray, rows: np.ndarray, ts: np.ndarray, x: np.ndarray, p: np.ndarray,
              out: np.ndarray, status: np.ndarray) -> None:  # fmt: skip
    for k in range(len(rows)):
        status[k] = advance(
            states[rows[k]], out[k], p, ts[k], x[0, k], x[1, k], x[2, k], x[3, k], x[4, k], x[5, k], x[6, k],
            x[7, k], x[8, k],
        )  # fmt: skip


@dataclass(frozen=True)
class StreamUpdate:
    """The result of one :meth:`FeatureStream.update`: one row per input tick, in input order."""

    tokens: list[str]
    values: np.ndarray  # (ticks, features) in spec order; NaN before warm-up or for ignored ticks
    ready: np.ndarray  # bool per tick: the token is past its warm-up
    status: np.ndarray  # int8 per tick: 0 ok, 1 stale (duplicate/out-of-order, ignored), 2 restarted

    @property
    def stale(self) -> int:
        return int((self.status == STATUS_STALE).sum())

    @property
    def restarts(self) -> int:
        return int((self.status == STATUS_RESTART).sum())


class FeatureStream:
    """Streaming feature state for many tokens.

    ``update`` takes one batch of bars (typically one event-time minute across many tokens) and returns
    each bar's features. State per token is a fixed-size row (``STATE_SIZE`` float64), it never grows with
    history, and :meth:`snapshot` / :meth:`restore` round-trip it exactly.
    """

    def __init__(self, spec: FeatureSpec, capacity: int = _GROW) -> None:
        self.spec = spec
        self._params = spec.param_vector()
        self._cols = spec.columns
        self._states = np.tile(initial_state(), (max(capacity, 1), 1))
        self._index: dict[str, int] = {}
        self._free: list[int] = list(range(len(self._states) - 1, -1, -1))

    # ------------------------------------------------------------ tokens
    def __len__(self) -> int:
        return len(self._index)

    @property
    def tokens(self) -> list[str]:
        return list(self._index)

    def _row(self, token: str) -> int:
        row = self._index.get(token)
        if row is None:
            if not self._free:
                self._grow()
            row = self._free.pop()
            self._states[row] = initial_state()
            self._index[token] = row
        return row

    def _grow(self) -> None:
        old = len(self._states)
        extra = max(_GROW, old)
        self._states = np.concatenate([self._states, np.tile(initial_state(), (extra, 1))])
        self._free.extend(range(old + extra - 1, old - 1, -1))

    def ready(self, token: str) -> bool:
        """True once the token's current segment is past the spec's warm-up."""
        row = self._index.get(token)
        return row is not None and self._states[row, N] >= self.spec.warmup_bars

    def state_bytes(self, token: str) -> int:
        """Bytes of state held for one token (constant: it never grows with history)."""
        return int(self._states[self._index[token]].nbytes)

    def evict_idle(self, now: float, ttl_minutes: float) -> list[str]:
        """Forget tokens whose last bar is older than ``ttl_minutes`` before ``now`` (epoch minutes)."""
        gone = [t for t, r in self._index.items() if self._states[r, LAST_TS] < now - ttl_minutes]
        for token in gone:
            self._free.append(self._index.pop(token))
        return gone

    # ------------------------------------------------------------ updates
    def update_arrays(self, tokens: Sequence[str], ts_minutes: np.ndarray, bars: np.ndarray) -> StreamUpdate:
        """Advance with bars given as arrays: ``ts_minutes`` (epoch minutes, float64) and ``bars``, a
        (9, n) float64 matrix of open, high, low, close, volume, liquidity, buys, sells, market_cap (NaN
        where absent)."""
        n = len(tokens)
        lookup = self._index.get
        found = [lookup(t) for t in tokens]
        if None in found:  # new tokens: allocate their rows (rare after the first minutes)
            found = [self._row(t) if r is None else r for t, r in zip(tokens, found, strict=True)]
        rows = np.array(found, dtype=np.int64)
        out = np.empty((n, N_OUT))
        status = np.zeros(n, dtype=np.int8)
        if n:
            _run_rows(
                self._states, rows, np.asarray(ts_minutes, dtype=np.float64), bars, self._params, out, status
            )
        values = out[:, self._cols]
        values[status == STATUS_STALE] = np.nan
        ready = (self._states[rows, N] >= self.spec.warmup_bars) & (status != STATUS_STALE)
        return StreamUpdate(list(tokens), values, ready, status)

    def update(self, bars: pl.DataFrame) -> StreamUpdate:
        """Advance with a canonical bar frame (one minute's batch, or any bars in time order)."""
        return self.update_arrays(bars["token"].to_list(), epoch_minutes(bars["ts"]), bar_matrix(bars))

    # ------------------------------------------------------------ snapshots
    def snapshot(self) -> bytes:
        """Every token's state as bytes: a JSON header (spec hash, tokens) and the raw state rows."""
        tokens = list(self._index)
        header = json.dumps(
            {"spec_hash": self.spec.hash, "state_size": STATE_SIZE, "tokens": tokens}
        ).encode()
        rows = self._states[[self._index[t] for t in tokens]] if tokens else np.empty((0, STATE_SIZE))
        return _MAGIC + struct.pack("<Q", len(header)) + header + np.ascontiguousarray(rows, "<f8").tobytes()

    @classmethod
    def restore(cls, spec: FeatureSpec, blob: bytes) -> FeatureStream:
        """Rebuild a stream from :meth:`snapshot` bytes; refuses a snapshot of another feature spec."""
        try:
            if blob[:8] != _MAGIC:
                raise SnapshotError("not a memed feature snapshot")
            (hlen,) = struct.unpack("<Q", blob[8:16])
            header = json.loads(blob[16 : 16 + hlen])
            rows = np.frombuffer(blob[16 + hlen :], dtype="<f8")
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"corrupt feature snapshot: {exc}") from None
        if header.get("spec_hash") != spec.hash:
            raise SpecMismatchError(
                f"snapshot was written for feature spec {header.get('spec_hash')}, "
                f"running spec is {spec.hash}"
            )
        tokens = header["tokens"]
        if header.get("state_size") != STATE_SIZE or rows.size != len(tokens) * STATE_SIZE:
            raise SnapshotError("feature snapshot is truncated or has the wrong state size")
        stream = cls(spec, capacity=max(_GROW, len(tokens)))
        for token, row in zip(tokens, rows.reshape(len(tokens), STATE_SIZE), strict=True):
            stream._states[stream._row(token)] = row
        return stream


__all__ = ["STATUS_OK", "STATUS_RESTART", "STATUS_STALE", "FeatureStream", "StreamUpdate", "stream_features"]


def stream_features(
    bars: pl.DataFrame, spec: FeatureSpec, on_minute: Callable[[int, int], None] | None = None
) -> pl.DataFrame:
    """Feed a canonical frame through a :class:`FeatureStream` one event-time minute at a time, exactly as
    the daemon does, and return the same frame shape as the batch driver (sorted by token, ts).

    ``on_minute(done, total)`` is called after each minute-batch (progress reporting).
    """
    bars = bars.sort(["token", "ts"], maintain_order=True)
    order = np.argsort(epoch_minutes(bars["ts"]), kind="stable")  # time order, token order within a minute
    ts = epoch_minutes(bars["ts"])[order]
    x = np.ascontiguousarray(bar_matrix(bars)[:, order])
    tokens = np.asarray(bars["token"].to_list(), dtype=object)[order]
    bounds = run_bounds(ts)
    stream = FeatureStream(spec, capacity=max(_GROW, bars["token"].n_unique()))
    values = np.empty((bars.height, len(spec.names)))
    total = len(bounds) - 1
    for i in range(total):
        a, b = bounds[i], bounds[i + 1]
        update = stream.update_arrays(tokens[a:b].tolist(), ts[a:b], x[:, a:b])
        values[order[a:b]] = update.values
        if on_minute is not None:
            on_minute(i + 1, total)
    feats = pl.DataFrame(values, schema=spec.names, orient="row").fill_nan(None)
    return pl.concat([bars.select("token", "ts"), feats], how="horizontal")
