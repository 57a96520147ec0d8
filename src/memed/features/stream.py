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

from memed.data.bars import BUYS, CLOSE, HIGH, LIQUIDITY, LOW, MARKET_CAP, OPEN, SELLS, VOLUME
from memed.data.frames import bar_matrix, epoch_minutes, run_bounds
from memed.errors import SnapshotError, SpecMismatchError
from memed.features.kernel import N_OUT, STATUS_OK, STATUS_RESTART, STATUS_STALE, advance, initial_state
from memed.features.layout import LAST_TS, STATE_SIZE, N
from memed.features.market import initial_market, initial_token, market_minute, market_params
from memed.features.spec import FeatureSpec
from memed.features.tokens import GROW_ROWS, TokenTable, fit_rows

_MAGIC = b"MEMEDFS1"


@njit(cache=True)
def _run_rows(states: np.ndarray, rows: np.ndarray, ts: np.ndarray, x: np.ndarray, p: np.ndarray,
              out: np.ndarray, status: np.ndarray) -> None:  # fmt: skip
    for k in range(len(rows)):
        status[k] = advance(
            states[rows[k]], out[k], p, ts[k], x[OPEN, k], x[HIGH, k], x[LOW, k], x[CLOSE, k], x[VOLUME, k],
            x[LIQUIDITY, k], x[BUYS, k], x[SELLS, k], x[MARKET_CAP, k],
        )  # fmt: skip


@dataclass(frozen=True)
class StreamUpdate:
    """The result of one :meth:`FeatureStream.update`: one row per input tick, in input order."""

    tokens: list[str]
    values: np.ndarray  # (ticks, features) in spec order; NaN before warm-up or for ignored ticks
    ready: np.ndarray  # bool per tick: the token is past its warm-up
    status: np.ndarray  # int8 per tick: 0 ok, 1 stale (duplicate/out-of-order, ignored), 2 restarted
    rows: np.ndarray  # int64 per tick: the token's row in the stream's TokenTable
    new: np.ndarray  # bool per tick: the row was handed out by this update (state started afresh)

    @property
    def stale(self) -> int:
        return int((self.status == STATUS_STALE).sum())

    @property
    def restarts(self) -> int:
        return int((self.status == STATUS_RESTART).sum())


class FeatureStream:
    """Streaming feature state for many tokens.

    ``update`` takes one batch of bars (typically one event-time minute across many tokens) and returns
    each bar's features. State per token is a fixed-size row (``STATE_SIZE`` float64) of the
    :class:`~memed.features.tokens.TokenTable` ``table`` (which others may share: the decision path keeps
    its per-token state in the same rows); it never grows with history, and :meth:`snapshot` /
    :meth:`restore` round-trip it exactly.
    """

    def __init__(self, spec: FeatureSpec, capacity: int = GROW_ROWS) -> None:
        self.spec = spec
        self._params = spec.param_vector()
        self._cols = spec.columns
        self.table = TokenTable(capacity)
        self._states = np.tile(initial_state(), (self.table.capacity, 1))
        self._q = market_params(spec) if spec.market else np.zeros(0, dtype=np.int64)
        self._market = initial_market(self._q) if spec.market else np.zeros(0)
        self._mtok = np.tile(initial_token(self._q), (self.table.capacity, 1)) if spec.market else None

    # ------------------------------------------------------------ tokens
    def __len__(self) -> int:
        return len(self.table)

    @property
    def tokens(self) -> list[str]:
        return self.table.tokens

    def ready(self, token: str) -> bool:
        """True once the token's current segment is past the spec's warm-up."""
        row = self.table.row(token)
        return row is not None and self._states[row, N] >= self.spec.warmup_bars

    def state_bytes(self, token: str) -> int:
        """Bytes of state held for one token (constant: it never grows with history)."""
        return int(self._states[self.table.rows([token])[0]].nbytes)

    def evict_idle(self, now: float, ttl_minutes: float) -> list[str]:
        """Forget tokens whose last bar is older than ``ttl_minutes`` before ``now`` (epoch minutes)."""
        tokens = self.table.tokens
        if not tokens:
            return []
        idle = self._states[self.table.rows(tokens), LAST_TS] < now - ttl_minutes
        gone = [t for t, old in zip(tokens, idle.tolist(), strict=True) if old]
        self.table.release(gone)
        return gone

    def last_minutes(self, tokens: Sequence[str]) -> np.ndarray:
        """Each token's last bar (epoch minutes; NaN for a token not held)."""
        out = np.full(len(tokens), np.nan)
        for k, t in enumerate(tokens):
            row = self.table.row(t)
            if row is not None:
                out[k] = self._states[row, LAST_TS]
        return out

    def forget(self, tokens: Sequence[str]) -> list[str]:
        """Forget these tokens' state now (those tracked); a later bar starts them afresh."""
        known = set(self.table.tokens)
        gone = [t for t in dict.fromkeys(tokens) if t in known]
        self.table.release(gone)
        return gone

    # ------------------------------------------------------------ updates
    def update_arrays(self, tokens: Sequence[str], ts_minutes: np.ndarray, bars: np.ndarray) -> StreamUpdate:
        """Advance with bars given as arrays: ``ts_minutes`` (epoch minutes, float64) and ``bars``, a
        (9, n) float64 matrix in :data:`~memed.data.bars.BAR_FIELDS` order (NaN where absent)."""
        n = len(tokens)
        rows, new = self.table.assign(tokens)
        self._states = fit_rows(self._states, self.table.capacity, 0.0)
        if new.any():
            self._states[rows[new]] = initial_state()
        out = np.empty((n, self.spec.width))
        status = np.zeros(n, dtype=np.int8)
        ts = np.asarray(ts_minutes, dtype=np.float64)
        if n:
            _run_rows(self._states, rows, ts, bars, self._params, out, status)
        if self._mtok is not None and n:
            self._market_minutes(rows, new, ts, bars[CLOSE], out)
        nbars = self._states[rows, N]
        self.spec.mask_converging(out, nbars)
        values = out[:, self._cols]
        values[status == STATUS_STALE] = np.nan
        ready = (nbars >= self.spec.warmup_bars) & (status != STATUS_STALE)
        return StreamUpdate(list(tokens), values, ready, status, rows, new)

    def _market_minutes(self, rows: np.ndarray, new: np.ndarray, ts: np.ndarray, close: np.ndarray,
                        out: np.ndarray) -> None:  # fmt: skip
        """The market context of each minute in the update (minutes in ascending order)."""
        assert self._mtok is not None
        if np.any(ts[1:] < ts[:-1]):
            raise ValueError("a stream with market context takes bars in time order (minute batches)")
        self._mtok = fit_rows(self._mtok, self.table.capacity, 0.0)
        if new.any():
            self._mtok[rows[new]] = initial_token(self._q)
        bounds = run_bounds(ts)
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            at = rows[a:b]
            out[a:b, N_OUT:] = market_minute(self._market, self._mtok, at, float(ts[a]), close[a:b], self._q)

    def update(self, bars: pl.DataFrame) -> StreamUpdate:
        """Advance with a canonical bar frame (one minute's batch, or any bars in time order)."""
        return self.update_arrays(bars["token"].to_list(), epoch_minutes(bars["ts"]), bar_matrix(bars))

    # ------------------------------------------------------------ snapshots
    def snapshot(self) -> bytes:
        """Every token's state as bytes: a JSON header (spec hash, tokens) and the raw state rows."""
        tokens = self.table.tokens
        at = self.table.rows(tokens) if tokens else np.zeros(0, dtype=np.int64)
        parts = [self._states[at].reshape(len(tokens), STATE_SIZE)]
        if self._mtok is not None:  # the market's ring, then each token's market row
            parts += [self._market, self._mtok[at].reshape(-1)]
        header = json.dumps(
            {"spec_hash": self.spec.hash, "state_size": STATE_SIZE, "tokens": tokens}
        ).encode()
        body = b"".join(np.ascontiguousarray(x, "<f8").tobytes() for x in parts)
        return _MAGIC + struct.pack("<Q", len(header)) + header + body

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
        stream = cls(spec, capacity=max(GROW_ROWS, len(tokens)))
        kernel = len(tokens) * STATE_SIZE
        market = 0 if stream._mtok is None else stream._market.size + len(tokens) * stream._mtok.shape[1]
        if header.get("state_size") != STATE_SIZE or rows.size != kernel + market:
            raise SnapshotError("feature snapshot is truncated or has the wrong state size")
        at, _ = stream.table.assign(tokens)
        stream._states[at] = rows[:kernel].reshape(len(tokens), STATE_SIZE)
        if stream._mtok is not None:
            g = stream._market.size
            stream._market[:] = rows[kernel : kernel + g]
            stream._mtok[at] = rows[kernel + g :].reshape(len(tokens), -1)
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
    stream = FeatureStream(spec, capacity=max(GROW_ROWS, bars["token"].n_unique()))
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
