"""Reference bins of a distribution at training time (:class:`memed.models.manifest.ReferenceBins`)."""

from __future__ import annotations

import numpy as np

from memed.models.manifest import Reference, ReferenceBins

BINS = 10


def reference_bins(values: np.ndarray) -> ReferenceBins | None:
    """Decile edges of the finite ``values`` (merged where they tie) and each bin's share; None when
    fewer than 100 values are finite or all are equal."""
    v = values[np.isfinite(values)]
    if len(v) < 100:  # noqa: PLR2004 - deciles of fewer values mean little
        return None
    edges = np.unique(np.quantile(v, np.linspace(0, 1, BINS + 1)[1:-1]))
    if not len(edges) or v.min() == v.max():
        return None
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    return ReferenceBins(edges=tuple(edges.tolist()), shares=tuple((counts / len(v)).tolist()), rows=len(v))


def build_reference(
    names: list[str], x_train: np.ndarray, p_val: np.ndarray, horizons: list[int]
) -> Reference:
    features = {n: b for k, n in enumerate(names) if (b := reference_bins(x_train[:, k])) is not None}
    p_up = {str(h): b for k, h in enumerate(horizons) if (b := reference_bins(p_val[:, k])) is not None}
    return Reference(features=features, p_up=p_up)
