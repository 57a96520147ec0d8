"""Feature drift: the population stability index of each served feature and of p_up per horizon,
every ``every_minutes`` of event time, against the training distribution stored in the manifest
(:class:`memed.models.manifest.Reference`).

Within a bucket, each token contributes one value per feature — its last ready one — so the sample is
``N`` tokens, not ``N`` times 60 overlapping rolling-window values. With ``a`` the bucket's shares (counts
+ 0.5 over ``N + 0.5 B``) and ``e`` the reference's (at least 1e-4) over the ``B`` bins,

    PSI = sum((a - e) * ln(a / e)).

For small differences ``N * PSI`` is approximately chi-square with ``B - 1`` degrees of freedom when
nothing changed, so the alarm threshold is calibrated to the sample:

    PSI > max(floor, chi2_{B-1}(1 - alpha / K) / N)

with ``K`` the number of names checked (Bonferroni), ``alpha = 0.001`` and ``floor = 0.25`` (the usual
line for a major shift: with thousands of tokens the chi-square term is tiny, and a real but harmless
shift should not page anyone). The chi-square quantile is Wilson and Hilferty's approximation (stdlib
only). Buckets with fewer than ``min_tokens`` tokens are not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from memed.models.manifest import Reference, ReferenceBins

ALPHA = 0.001
FLOOR = 0.25
MIN_TOKENS = 10


def chi2_quantile(q: float, k: int) -> float:
    """Wilson-Hilferty: the ``q`` quantile of chi-square with ``k`` degrees of freedom."""
    z = NormalDist().inv_cdf(q)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def psi(values: np.ndarray, ref: ReferenceBins) -> float:
    edges = np.asarray(ref.edges)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    a = (counts + 0.5) / (len(values) + 0.5 * len(counts))
    e = np.maximum(np.asarray(ref.shares), 1e-4)
    return float(((a - e) * np.log(a / e)).sum())


def threshold(n: int, bins: int, names: int) -> float:
    return max(FLOOR, chi2_quantile(1 - ALPHA / max(names, 1), bins - 1) / n)


@dataclass(frozen=True)
class PsiAlarm:
    minute: int
    name: str
    psi: float
    threshold: float
    tokens: int


class FeatureDrift:
    def __init__(self, reference: Reference, feature_names: tuple[str, ...], horizons: tuple[int, ...],
                 every_minutes: int = 60) -> None:  # fmt: skip
        self.every = every_minutes
        self.refs = [(k, name, reference.features[name]) for k, name in enumerate(feature_names)
                     if name in reference.features]  # fmt: skip
        self.p_refs = [(k, f"p_{h}", reference.p_up[str(h)]) for k, h in enumerate(horizons)
                       if str(h) in reference.p_up]  # fmt: skip
        self.names = len(self.refs) + len(self.p_refs)
        self._bucket = -1
        self._last: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.latest: dict[str, float] = {}
        """The last judged bucket's PSI per name."""
        self.alarms: list[PsiAlarm] = []

    def step(self, minute: int, tokens: list[str], features: np.ndarray | None, ready: np.ndarray | None,
             horizon_p: np.ndarray) -> list[PsiAlarm]:  # fmt: skip
        """Take a minute's served rows; when it opens a new bucket, the previous one is judged."""
        bucket = -(-minute // self.every)  # bucket b holds minutes ((b-1)E, bE]
        raised: list[PsiAlarm] = []
        if bucket != self._bucket:
            if self._last:
                raised = self._judge(minute)
            self._bucket, self._last = bucket, {}
        if features is None or ready is None:
            return raised
        for i in np.flatnonzero(ready).tolist():
            self._last[tokens[i]] = (features[i], horizon_p[i])
        return raised

    def _judge(self, minute: int) -> list[PsiAlarm]:
        x = np.stack([f for f, _ in self._last.values()])
        p = np.stack([q for _, q in self._last.values()])
        raised = []
        for matrix, refs in ((x, self.refs), (p, self.p_refs)):
            for k, name, ref in refs:
                v = matrix[:, k]
                v = v[np.isfinite(v)]
                if len(v) < MIN_TOKENS:
                    continue
                value = psi(v, ref)
                self.latest[name] = value
                limit = threshold(len(v), len(ref.shares), self.names)
                if value > limit:
                    raised.append(PsiAlarm(minute, name, value, limit, len(v)))
        self.alarms += raised
        del self.alarms[:-100]
        return raised
