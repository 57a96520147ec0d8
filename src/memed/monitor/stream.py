"""The one scoring stream the daemon and the backtester both run: each minute's decided bars in, the
labels they resolve scored, a snapshot of the scores every ``every_minutes`` minutes of event time
(at minutes that are multiples of it, so both sides snapshot the same minutes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np
import polars as pl

from memed.decision.result import Decisions, member_column
from memed.monitor.drift import Alarm, DriftAlarms
from memed.monitor.labels import DelayedLabels
from memed.monitor.sampling import Sample
from memed.monitor.scores import ScoreBoard
from memed.signals.policy import ACTIONS, SIDES

_BUY = np.array([a in ("BUY", "STRONG_BUY") for a in ACTIONS])
_LONG = SIDES.index("long")
_VERSION = 2
"""The snapshot's layout (2: members and R-multiples)."""


@dataclass
class Snapshot:
    minute: int
    scores: dict[str, dict[str, Any]]
    alarms: list[dict[str, Any]] = field(default_factory=list)
    """Drift alarms raised since the previous snapshot."""


class ScoreStream:
    def __init__(self, horizons: tuple[int, ...], *, interval_minutes: int = 1, window_minutes: int = 1440,
                 every_minutes: int = 60, ties: Literal["exclude", "down"] = "exclude",
                 sample_share: float = 1.0, members: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.members = members
        """The ensemble's members scored on their own (the model families served)."""
        self.labels = DelayedLabels(horizons, interval_minutes, ties, len(members))
        self.sample_share = sample_share
        self._sample = Sample(sample_share)
        self.board = ScoreBoard(horizons, window_minutes, every_minutes, members)
        self.drift = DriftAlarms(horizons, interval_minutes)
        self.every = every_minutes
        self.latest: Snapshot | None = None
        self.raised: list[Alarm] = []
        """Drift alarms raised by the last :meth:`step`."""
        self._pending_alarms: list[Alarm] = []

    def step(self, tokens: list[str], minute: int, close: np.ndarray, horizon_p: np.ndarray,
             action: np.ndarray, side: np.ndarray, *, unit: np.ndarray | None = None,
             members: dict[str, np.ndarray] | None = None) -> Snapshot | None:  # fmt: skip
        """One minute's decisions (as :class:`~memed.decision.Decisions` holds them: ``unit`` is the risk
        plans' ``entry - stop_loss``, ``members`` each model's calibrated ``p_up`` [n, H]); the snapshot
        when this minute is one to report."""
        buy = _BUY[np.asarray(action, dtype=np.int64)] & (np.asarray(side) == _LONG)
        mp = self._member_matrix(len(tokens), members)
        if self.sample_share < 1.0:
            keep = np.array([self._sample(t) for t in tokens], dtype=np.bool_)
            tokens = [t for t, k in zip(tokens, keep.tolist(), strict=True) if k]
            close, horizon_p, buy = np.asarray(close)[keep], np.asarray(horizon_p)[keep], buy[keep]
            unit = None if unit is None else np.asarray(unit)[keep]
            mp = mp[keep]
        resolved = self.labels.update(tokens, minute, close, horizon_p, buy, unit, mp)
        self.board.add(minute, resolved)
        self.raised = self.drift.add(minute, resolved)
        self._pending_alarms += self.raised
        if minute % self.every:
            return None
        self.latest = Snapshot(minute, self.board.scores(), [asdict(a) for a in self._pending_alarms])
        self._pending_alarms = []
        return self.latest

    def _member_matrix(self, n: int, members: dict[str, np.ndarray] | None) -> np.ndarray:
        """[n, H, members] in :attr:`members` order (NaN for a member not given)."""
        out = np.full((n, len(self.labels.horizons), len(self.members)), np.nan)
        for j, name in enumerate(self.members):
            if members is not None and name in members:
                out[:, :, j] = members[name]
        return out

    def forget(self, tokens: list[str]) -> None:
        self.labels.forget(tokens)
        self._sample.forget(tokens)

    def snapshot(self) -> bytes:
        """Everything needed to go on exactly (part of the daemon's checkpoint)."""
        latest = None if self.latest is None else asdict(self.latest)
        return msgspec.msgpack.encode({"version": _VERSION, "horizons": list(self.labels.horizons),
                                       "members": list(self.members), "labels": self.labels.state(),
                                       "board": self.board.state(), "drift": self.drift.state(),
                                       "alarms": [asdict(a) for a in self.drift.alarms],
                                       "pending": [asdict(a) for a in self._pending_alarms],
                                       "latest": latest})  # fmt: skip

    def restore(self, blob: bytes) -> bool:
        """Go on from :meth:`snapshot`; False (and nothing restored) for another set of horizons or
        members, or a snapshot of an older layout."""
        doc = msgspec.msgpack.decode(blob)
        if doc.get("version") != _VERSION or tuple(doc["horizons"]) != self.labels.horizons:
            return False
        if tuple(doc["members"]) != self.members:
            return False
        self.labels.load(doc["labels"])
        self.board.load(doc["board"])
        self.drift.load(doc.get("drift", {}))
        self.drift.alarms = [Alarm(**a) for a in doc.get("alarms", [])]
        self._pending_alarms = [Alarm(**a) for a in doc.get("pending", [])]
        if doc["latest"] is not None:
            self.latest = Snapshot(**doc["latest"])
        return True


def score_history(decisions: Decisions, stream: ScoreStream) -> list[Snapshot]:
    """The stream over a replay's decisions (rows sorted by time, then token: the history driver's
    order): what the daemon would have reported, minute by minute."""
    d = decisions
    return _by_minute(stream, d.ts_minutes.astype(np.int64), d.tokens.to_list(), d.close, d.horizon_p,
                      d.action, d.side, d.risk.entry - d.risk.stop_loss, d.members)  # fmt: skip


def score_signals(signals: pl.DataFrame, stream: ScoreStream) -> list[Snapshot]:
    """The stream over a backtest's ``signals.parquet`` frame (``token, ts, action, side, close, entry,
    stop_loss, p_<h>``, ``m_<member>_<h>``): the scores the daemon would have reported over the
    replayed minutes."""
    frame = signals.sort("ts", "token")
    minutes = (frame["ts"].dt.epoch("s") // 60).to_numpy()
    horizon_p = np.column_stack([frame[f"p_{h}"].to_numpy() for h in stream.labels.horizons])
    action = np.array([ACTIONS.index(a) for a in frame["action"].to_list()], dtype=np.int8)
    side = np.array([SIDES.index(s) for s in frame["side"].to_list()], dtype=np.int8)
    unit = (frame["entry"] - frame["stop_loss"]).to_numpy()
    hs = stream.labels.horizons
    members = {m: np.column_stack([frame[member_column(m, h)].to_numpy() for h in hs])
               for m in stream.members if member_column(m, hs[0]) in frame.columns}  # fmt: skip
    return _by_minute(stream, minutes, frame["token"].to_list(), frame["close"].to_numpy(), horizon_p, action,
                      side, unit, members)  # fmt: skip


def _by_minute(stream: ScoreStream, minutes: np.ndarray, tokens: list[str], close: np.ndarray,
               horizon_p: np.ndarray, action: np.ndarray, side: np.ndarray, unit: np.ndarray,
               members: dict[str, np.ndarray]) -> list[Snapshot]:  # fmt: skip
    """Rows sorted by minute, stepped a minute at a time."""
    bounds = np.flatnonzero(np.diff(minutes)) + 1
    out = []
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(minutes)], strict=True):
        snap = stream.step(tokens[a:b], int(minutes[a]), close[a:b], horizon_p[a:b], action[a:b], side[a:b],
                           unit=unit[a:b], members={m: p[a:b] for m, p in members.items()})  # fmt: skip
        if snap is not None:
            out.append(snap)
    return out
