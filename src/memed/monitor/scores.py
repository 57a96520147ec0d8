"""Rolling scores of served probabilities against their delayed labels, per horizon, over the labels
resolved in the last ``window_minutes`` minutes of event time:

* ``auc``: ROC AUC, exact (the Mann-Whitney statistic with tied probabilities counted half) — the
  chance that an up bar got a higher p_up than a down bar; 0.5 is a coin, below 0.5 is worse than one.
* ``log_loss`` and ``brier``: the cost of the probabilities themselves (lower is better; a constant 0.5
  scores 0.693 and 0.25).
* ``reliability``: 10 bins of p_up with their count, mean p_up and up-rate: calibrated when they agree.
* ``buy_hit_rate``: the up-rate after BUY signals (what a long position needs above its break-even).
* ``n``, ``up_rate``: how many labels the window holds, and the base rate a model must beat.

Sums run over the window in a fixed order (minute, then token), so two boards fed the same resolutions
report the same numbers bit for bit.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from memed.monitor.labels import Resolved

BINS = 10
EPS = 1e-15


def roc_auc(p: np.ndarray, y: np.ndarray) -> float:
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sp = p[order]
    i = 0
    while i < len(sp):  # average ranks over ties
        j = i
        while j + 1 < len(sp) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def window_scores(p: np.ndarray, y: np.ndarray, buy: np.ndarray) -> dict[str, Any]:
    n = len(p)
    if n == 0:
        return {"n": 0}
    q = np.clip(p, EPS, 1 - EPS)
    bins = np.minimum((p * BINS).astype(np.int64), BINS - 1)
    table = []
    for b in range(BINS):
        m = bins == b
        c = int(m.sum())
        table.append({"bin": b, "n": c, "mean_p": float(p[m].mean()) if c else None,
                      "up_rate": float(y[m].mean()) if c else None})  # fmt: skip
    nb = int(buy.sum())
    return {
        "n": n,
        "up_rate": float(y.mean()),
        "auc": roc_auc(p, y),
        "log_loss": float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean()),
        "brier": float(((p - y) ** 2).mean()),
        "buys": nb,
        "buy_hit_rate": float(y[buy].mean()) if nb else None,
        "reliability": table,
    }


class ScoreBoard:
    """Per horizon, the labels resolved in the last ``window_minutes`` minutes."""

    def __init__(self, horizons: tuple[int, ...], window_minutes: int) -> None:
        self.window = window_minutes
        self._minutes: dict[int, deque[tuple[int, Resolved]]] = {h: deque() for h in horizons}
        self.labelled: dict[int, int] = dict.fromkeys(horizons, 0)
        """Labels resolved since the start, per horizon."""

    def add(self, minute: int, resolved: list[Resolved]) -> None:
        for r in resolved:
            if len(r.p):
                self._minutes[r.horizon].append((minute, r))
                self.labelled[r.horizon] += len(r.p)
        for q in self._minutes.values():
            while q and q[0][0] <= minute - self.window:
                q.popleft()

    def scores(self) -> dict[str, dict[str, Any]]:
        """Per horizon (as a string, like the signals' ``horizons``), the window's scores."""
        out = {}
        for h, q in self._minutes.items():
            if q:
                p = np.concatenate([r.p for _, r in q])
                y = np.concatenate([r.y for _, r in q])
                buy = np.concatenate([r.buy for _, r in q])
            else:
                p = y = np.empty(0)
                buy = np.empty(0, np.bool_)
            out[str(h)] = window_scores(p, y, buy) | {"labelled_total": self.labelled[h]}
        return out

    def state(self) -> dict[str, object]:
        return {
            "labelled": {str(h): n for h, n in self.labelled.items()},
            "minutes": {
                str(h): [(m, r.p.tobytes(), r.y.tobytes(), r.buy.tobytes()) for m, r in q]
                for h, q in self._minutes.items()
            },
        }

    def load(self, doc: dict[str, Any]) -> None:
        for h in self._minutes:
            self.labelled[h] = int(doc["labelled"][str(h)])
            self._minutes[h] = deque(
                (int(m), Resolved(h, np.frombuffer(p), np.frombuffer(y), np.frombuffer(b, np.bool_)))
                for m, p, y, b in doc["minutes"][str(h)]
            )
