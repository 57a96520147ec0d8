"""Rolling scores of served probabilities against their delayed labels, per horizon, over the labels
resolved in the last ``window_minutes`` minutes of event time:

* ``auc``: ROC AUC — the chance that an up bar got a higher p_up than a down bar (ties count half); 0.5
  is a coin. Exact for p_up rounded down to 1/:data:`AUC_BINS` (a histogram per class), which is what
  keeps it in fixed memory whatever the number of tokens.
* ``log_loss`` and ``brier``: the cost of the probabilities themselves (lower is better; a constant 0.5
  scores 0.693 and 0.25).
* ``reliability``: 10 bins of p_up with their count, mean p_up and up-rate: calibrated when they agree.
* ``buy_hit_rate``: the up-rate after BUY signals (what a long position needs above its break-even).
* ``buy_r_mean``: the BUY plans' mean R-multiple, each marked at the horizon's close:
  ``(close(t+h) - entry) / (entry - stop)`` — what the ATR plan made per unit of risk it took, before
  costs (above 0 pays; -1 is a full stop-out). Marked, not simulated: a stop touched on the way and
  recovered from counts as the recovery (the backtest's simulator fills stops bar by bar).
* ``members``: per ensemble member (model family), its own ``n``, ``auc``, ``log_loss`` and ``brier``
  on the same labels — which member carries the ensemble, and which has stopped predicting.
* ``n``, ``up_rate``: how many labels the window holds, and the base rate a model must beat.

The window is kept as sums per ``every_minutes`` bucket (bucket ``b`` holds the minutes
``((b-1)E, bE]``), so a snapshot at a multiple of ``E`` covers whole buckets and memory is fixed:
``ceil(window / E)`` buckets per horizon, about 17 KB each. Sums run in a fixed order (minute, then
token), so two boards fed the same resolutions report the same numbers bit for bit.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from memed.monitor.labels import Resolved

BINS = 10
AUC_BINS = 1000
EPS = 1e-15
_SUMS = ("n", "up", "log_loss", "brier", "buys", "buy_up", "buy_r", "buy_r_n")


class Bucket:
    """Sufficient statistics of the labels of some minutes."""

    def __init__(self) -> None:
        self.sums = np.zeros(len(_SUMS))
        self.rel = np.zeros((3, BINS))  # count, sum p, sum y per reliability bin
        self.hist = np.zeros((2, AUC_BINS), np.int64)  # down, up counts per p bin

    def add(self, r: Resolved) -> None:
        self.add_p(r.p, r.y, r.buy, r.r)

    def add_p(self, p: np.ndarray, y: np.ndarray, buy: np.ndarray, rm: np.ndarray | None = None) -> None:
        q = np.clip(p, EPS, 1 - EPS)
        rs = rm[np.isfinite(rm)] if rm is not None else np.empty(0)
        self.sums += (len(p), y.sum(), -(y * np.log(q) + (1 - y) * np.log(1 - q)).sum(),
                      ((p - y) ** 2).sum(), buy.sum(), y[buy].sum(), rs.sum(), len(rs))  # fmt: skip
        b = np.minimum((p * BINS).astype(np.int64), BINS - 1)
        self.rel += np.stack(
            [np.bincount(b, minlength=BINS), np.bincount(b, p, BINS), np.bincount(b, y, BINS)]
        )
        a = np.minimum((p * AUC_BINS).astype(np.int64), AUC_BINS - 1)
        up = y == 1
        self.hist[0] += np.bincount(a[~up], minlength=AUC_BINS)
        self.hist[1] += np.bincount(a[up], minlength=AUC_BINS)

    def merge(self, other: Bucket) -> None:
        self.sums += other.sums
        self.rel += other.rel
        self.hist += other.hist

    def state(self) -> tuple[bytes, bytes, bytes]:
        return self.sums.tobytes(), self.rel.tobytes(), self.hist.tobytes()

    @classmethod
    def load(cls, doc: tuple[bytes, bytes, bytes]) -> Bucket:
        b = cls()
        b.sums = np.frombuffer(doc[0]).copy()
        b.rel = np.frombuffer(doc[1]).reshape(3, BINS).copy()
        b.hist = np.frombuffer(doc[2], np.int64).reshape(2, AUC_BINS).copy()
        return b


def histogram_auc(down: np.ndarray, up: np.ndarray) -> float:
    """AUC from per-bin counts of each class (same bin: half)."""
    pos, neg = int(up.sum()), int(down.sum())
    if pos == 0 or neg == 0:
        return float("nan")
    below = np.concatenate([[0], np.cumsum(down)[:-1]])
    return float((up * (below + 0.5 * down)).sum() / (pos * neg))


def bucket_scores(b: Bucket) -> dict[str, Any]:
    n, up, ll, brier, buys, buy_up, buy_r, buy_r_n = b.sums.tolist()
    if n == 0:
        return {"n": 0}
    table = [{"bin": k, "n": int(c), "mean_p": sp / c if c else None, "up_rate": sy / c if c else None}
             for k, (c, sp, sy) in enumerate(b.rel.T.tolist())]  # fmt: skip
    return {
        "n": int(n),
        "up_rate": up / n,
        "auc": histogram_auc(b.hist[0], b.hist[1]),
        "log_loss": ll / n,
        "brier": brier / n,
        "buys": int(buys),
        "buy_hit_rate": buy_up / buys if buys else None,
        "buy_r_mean": buy_r / buy_r_n if buy_r_n else None,
        "reliability": table,
    }


def member_scores(b: Bucket) -> dict[str, Any]:
    """A member's share of :func:`bucket_scores`: how well its own probabilities predict."""
    full = bucket_scores(b)
    return {k: full[k] for k in ("n", "auc", "log_loss", "brier") if k in full}


def window_scores(p: np.ndarray, y: np.ndarray, buy: np.ndarray) -> dict[str, Any]:
    """The scores of one set of labels (what a window's buckets add up to)."""
    b = Bucket()
    b.add(Resolved(0, p, y, buy))
    return bucket_scores(b)


class ScoreBoard:
    """Per horizon, the labels resolved in the last ``window_minutes`` minutes, as bucket sums: the
    ensemble's, then each of ``members``'."""

    def __init__(self, horizons: tuple[int, ...], window_minutes: int, every_minutes: int,
                 members: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.every = every_minutes
        self.members = members
        self.buckets_kept = -(-window_minutes // every_minutes)
        self._buckets: dict[int, deque[tuple[int, list[Bucket]]]] = {h: deque() for h in horizons}
        self.labelled: dict[int, int] = dict.fromkeys(horizons, 0)
        """Labels resolved since the start, per horizon."""

    def add(self, minute: int, resolved: list[Resolved]) -> None:
        index = -(-minute // self.every)  # bucket b holds minutes ((b-1)E, bE]
        for r in resolved:
            if not len(r.p):
                continue
            q = self._buckets[r.horizon]
            if not q or q[-1][0] != index:
                q.append((index, [Bucket() for _ in range(1 + len(self.members))]))
            ensemble, *members = q[-1][1]
            ensemble.add(r)
            if r.members is not None:
                for j, b in enumerate(members):
                    p = r.members[:, j]
                    ok = ~np.isnan(p)
                    b.add_p(p[ok], r.y[ok], r.buy[ok])
            self.labelled[r.horizon] += len(r.p)
        for q in self._buckets.values():
            while q and q[0][0] <= index - self.buckets_kept:
                q.popleft()

    def scores(self) -> dict[str, dict[str, Any]]:
        """Per horizon (as a string, like the signals' ``horizons``), the window's scores."""
        out = {}
        for h, q in self._buckets.items():
            total = [Bucket() for _ in range(1 + len(self.members))]
            for _, bs in q:
                for t, b in zip(total, bs, strict=True):
                    t.merge(b)
            out[str(h)] = bucket_scores(total[0]) | {"labelled_total": self.labelled[h]}
            if self.members:
                out[str(h)]["members"] = {
                    m: member_scores(b) for m, b in zip(self.members, total[1:], strict=True)
                }
        return out

    def state(self) -> dict[str, object]:
        return {
            "labelled": {str(h): n for h, n in self.labelled.items()},
            "buckets": {
                str(h): [(i, [b.state() for b in bs]) for i, bs in q] for h, q in self._buckets.items()
            },
        }

    def load(self, doc: dict[str, Any]) -> None:
        for h in self._buckets:
            self.labelled[h] = int(doc["labelled"][str(h)])
            self._buckets[h] = deque(
                (int(i), [Bucket.load(tuple(b)) for b in bs]) for i, bs in doc["buckets"][str(h)]
            )
