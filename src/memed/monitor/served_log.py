"""The served-feature log (``[monitor] log_dir``): what the daemon did for a hash-sampled share of tokens,
kept so that :mod:`memed.monitor.parity` can recompute it offline with the batch driver.

For a sampled token, every bar is kept (a token is in or out, by a hash of its name, as the delayed-label
scoring samples): each served row holds the bar the daemon accepted, the feature vector it computed, the
ensemble's ``p_up`` per horizon, the action, the model set that served it and the daemon run (one per
process start). Ticks the daemon refused as ``late`` (their minute had closed) are kept too, as rows of
kind ``late`` without features: an offline pipeline fed the raw feed would see them.

Rows are buffered and written as Parquet files rolled by hour of event time
(``served-YYYYMMDDTHH-<run>-<n>.parquet``): when the next hour starts, at every checkpoint and when the
daemon stops. A daemon killed and restarted from its checkpoint serves the minutes after it again (from
its journal) and logs them again; the parity check keeps the last row of a (token, minute). Daemons
sharing a NATS stream (``--source nats``) each write their own files (one run each) into the same folder,
flushed before every partition snapshot, so a partition taken over logs again, identically, only what
came after the snapshot. :meth:`served` and :meth:`flush` may be called from several threads at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from memed.data.bars import BAR_FIELDS
from memed.decision.result import Decisions
from memed.monitor.sampling import Sample

KIND_SERVED = "served"
KIND_LATE = "late"


def feature_column(name: str) -> str:
    return f"f_{name}"


class ServedLog:
    def __init__(self, folder: Path, share: float, feature_names: Sequence[str], horizons: Sequence[int],
                 run: str) -> None:  # fmt: skip
        self.folder = folder
        self.share = share
        self.feature_names = tuple(feature_names)
        self.horizons = tuple(horizons)
        self.run = run
        self._written = 0
        self._hour: int | None = None
        self._parts: list[pl.DataFrame] = []
        self._late: deque[dict[str, Any]] = deque()
        self._lock = threading.RLock()
        self.sampled = Sample(share)
        folder.mkdir(parents=True, exist_ok=True)

    def late(self, token: str, minute: int, row: tuple[float, ...]) -> None:
        """A tick refused as late (called on the event loop; cheap, and never waits for a file being
        written: :meth:`flush` takes the rows off the other end of the deque, so none is lost)."""
        if self.sampled(token):
            self._late.append({"token": token, "minute": minute, **dict(zip(BAR_FIELDS, row, strict=True))})

    def served(self, minute: int, tokens: list[str], bars: np.ndarray, d: Decisions) -> None:
        """One processed minute: ``tokens`` and ``bars`` as the decision path took them, ``d`` its result
        (stale rows left out). Writes the previous hour's file when ``minute`` starts a new hour."""
        with self._lock:
            self._served(minute, tokens, bars, d)

    def _served(self, minute: int, tokens: list[str], bars: np.ndarray, d: Decisions) -> None:
        hour = minute // 60
        if self._hour is not None and hour != self._hour:
            self.flush()
        self._hour = hour
        served = d.tokens.to_list()
        keep = [i for i, t in enumerate(served) if self.sampled(t)]
        if not keep or d.features is None:
            return
        col = {t: i for i, t in enumerate(tokens)}
        at = np.array([col[served[i]] for i in keep], dtype=np.int64)
        k = np.array(keep, dtype=np.int64)
        m = len(keep)
        cols: dict[str, Any] = {
            "kind": [KIND_SERVED] * m,
            "run": [self.run] * m,
            "log_share": np.full(m, self.share),
            "token": [served[i] for i in keep],
            "minute": np.full(m, minute, dtype=np.int64),
            **{f: bars[j, at] for j, f in enumerate(BAR_FIELDS)},
            "model_set": [d.model_set] * m,
            "ready": d.ready[k] if d.ready is not None else np.ones(m, dtype=np.bool_),
            "action": d.action[k],
            **{feature_column(f): d.features[k, j] for j, f in enumerate(self.feature_names)},
            **{f"p_{h}": d.horizon_p[k, j] for j, h in enumerate(self.horizons)},
        }
        self._parts.append(pl.DataFrame(cols))

    def flush(self) -> Path | None:
        """Write what the buffer holds (the current hour's rows and the late ticks) to a new file."""
        with self._lock:
            return self._flush()

    def _flush(self) -> Path | None:
        late = [self._late.popleft() for _ in range(len(self._late))]
        parts, self._parts = self._parts, []
        if late:
            parts.append(pl.DataFrame(late).with_columns(kind=pl.lit(KIND_LATE), run=pl.lit(self.run)))
        if not parts or self._hour is None:
            return None
        frame = pl.concat(parts, how="diagonal_relaxed")
        stamp = datetime.fromtimestamp(self._hour * 3600, UTC).strftime("%Y%m%dT%H")
        path = self.folder / f"served-{stamp}-{self.run}-{self._written}.parquet"
        tmp = path.with_suffix(".tmp")
        frame.write_parquet(tmp)
        tmp.replace(path)
        self._written += 1
        return path


def read_log(folder: Path) -> pl.DataFrame:
    """Every file of a served-feature log, in one frame (rows of both kinds)."""
    files = sorted(folder.glob("served-*.parquet")) if folder.is_dir() else [folder]
    if not files:
        raise FileNotFoundError(f"no served-*.parquet files in {folder}")
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
