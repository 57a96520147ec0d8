"""Drift alarms on the delayed-label scores: ADWIN (Bifet and Gavaldà, 2007) over each horizon's log loss,
and the same test over its 0/1 errors (``p_up >= 0.5`` against the label: a binary detector).

ADWIN assumes independent observations; delayed labels are not. Labels of one horizon ``h`` overlap in
time (the labels of minutes ``t`` and ``t + 1`` share ``h - 1`` minutes of the same move) and the tokens of
one minute share the market's move. So one observation is one *block* of ``h`` minutes of event time: the
mean over every label resolved in it, all tokens together — blocks overlap at most with their
neighbours. Log loss is divided by ``2 ln 2`` and clipped to [0, 1] (a coin's 0.693 becomes 0.5), the
error rate is in [0, 1] already, so ADWIN's bound holds as stated. The window keeps at most
``max_blocks`` blocks; every cut between two blocks with at least ``min_blocks`` on each side splits it
into an older part (``n0`` blocks, mean ``m0``) and a recent one (``n1``, ``m1``); it is a change when

    |m1 - m0| >= sqrt(2 / k * var * ln(2 / d)) + 2 R / (3 k) * ln(2 / d),   k = 1 / (1/n0 + 1/n1),

with ``var`` the window's variance, ``R`` its range (max - min) and ``d = delta / (number of blocks)`` —
ADWIN's Bernstein bound, exact over every cut, with the values' range taken from the window instead of
the [0, 1] a single label could span (a block mean of hundreds of labels moves by hundredths: with
``R = 1`` nothing short of a total collapse would ever be detected). On a change the older part is
dropped; when the recent part is *worse* (higher loss or error rate) an alarm is raised. Detection
therefore takes at least ``min_blocks`` blocks after a break: 75 minutes at 15 m, 10 hours at 2 h.
The state is a few arrays (part of the daemon's checkpoint) and the computation deterministic: the
daemon and the backtest raise the same alarms at the same minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from memed.monitor.labels import Resolved
from memed.monitor.scores import EPS


@dataclass(frozen=True)
class Alarm:
    minute: int
    horizon: int
    kind: str  # "log_loss" or "error"
    before: float
    after: float
    blocks_before: int
    blocks_after: int


class Adwin:
    """ADWIN over a stream of values in [0, 1] (see the module's description)."""

    def __init__(self, delta: float = 0.002, max_blocks: int = 200, min_blocks: int = 5) -> None:
        self.delta = delta
        self.max_blocks = max_blocks
        self.min_blocks = min_blocks
        self.values = np.zeros(0)

    def add(self, value: float) -> tuple[float, float, int, int] | None:
        """Take one value; on a change, ``(mean before, mean after, values before, values after)``."""
        self.values = np.r_[self.values, value][-self.max_blocks :]
        k = len(self.values)
        if k < 2 * self.min_blocks:
            return None
        c = np.cumsum(self.values)
        n0 = np.arange(1, k, dtype=np.float64)
        n1 = k - n0
        m0 = c[:-1] / n0
        m1 = (c[-1] - c[:-1]) / n1
        ok = (n0 >= self.min_blocks) & (n1 >= self.min_blocks)
        var = float(self.values.var())
        spread = float(np.ptp(self.values))
        h = 1.0 / (1.0 / n0 + 1.0 / n1)
        log_term = math.log(2.0 / (self.delta / k))
        eps = np.sqrt(2.0 / h * var * log_term) + 2.0 * spread / (3.0 * h) * log_term
        cut = ok & (np.abs(m1 - m0) >= eps)
        if not cut.any():
            return None
        i = int(np.flatnonzero(cut)[-1])  # the latest cut: drop as little as the test allows
        out = (float(m0[i]), float(m1[i]), int(n0[i]), int(n1[i]))
        self.values = self.values[i + 1 :]
        return out


class DriftAlarms:
    """Per horizon, ADWIN on the blocks' log loss and 0/1 error rate (see the module's description)."""

    KINDS = ("log_loss", "error")

    def __init__(self, horizons: tuple[int, ...], interval_minutes: int = 1, delta: float = 0.002,
                 max_blocks: int = 200, min_blocks: int = 5) -> None:  # fmt: skip
        self.block = {h: max(1, h // interval_minutes) * interval_minutes for h in horizons}
        self.detectors = {
            (h, kind): Adwin(delta, max_blocks, min_blocks) for h in horizons for kind in self.KINDS
        }
        self._open: dict[int, list[float]] = {h: [-1.0, 0.0, 0.0, 0.0] for h in horizons}
        """Per horizon: the open block's index, label count, summed log loss, summed errors."""
        self.alarms: list[Alarm] = []
        """The latest alarms raised (at most 100, the newest last)."""

    def add(self, minute: int, resolved: list[Resolved]) -> list[Alarm]:
        raised = []
        by_h = {r.horizon: r for r in resolved}
        for h, acc in self._open.items():
            index = minute // self.block[h]
            if acc[0] >= 0 and index != acc[0] and acc[1] > 0:  # the open block is complete
                loss = min(acc[2] / acc[1] / (2 * math.log(2)), 1.0)
                for kind, value in (("log_loss", loss), ("error", acc[3] / acc[1])):
                    change = self.detectors[(h, kind)].add(value)
                    if change is not None and change[1] > change[0]:  # the recent part is worse
                        raised.append(Alarm(minute, h, kind, change[0], change[1], change[2], change[3]))
            if index != acc[0]:
                acc[:] = [float(index), 0.0, 0.0, 0.0]
            r = by_h.get(h)
            if r is not None and len(r.p):
                q = np.clip(r.p, EPS, 1 - EPS)
                acc[1] += len(r.p)
                acc[2] += float(-(r.y * np.log(q) + (1 - r.y) * np.log(1 - q)).sum())
                acc[3] += float(((r.p >= 0.5) != (r.y == 1)).sum())  # noqa: PLR2004 - the coin's line
        self.alarms += raised
        del self.alarms[:-100]
        return raised

    def state(self) -> dict[str, Any]:
        return {
            "values": {f"{h}:{kind}": d.values.tobytes() for (h, kind), d in self.detectors.items()},
            "open": {str(h): acc for h, acc in self._open.items()},
        }

    def load(self, doc: dict[str, Any]) -> None:
        for (h, kind), d in self.detectors.items():
            blob = doc.get("values", {}).get(f"{h}:{kind}")
            if blob is not None:
                d.values = np.frombuffer(blob).copy()
        for h in self._open:
            if str(h) in doc.get("open", {}):
                self._open[h] = [float(x) for x in doc["open"][str(h)]]
