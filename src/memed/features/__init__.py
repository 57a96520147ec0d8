"""The shared incremental feature engine: one compiled implementation, two drivers.

* :func:`compute_features` — batch: a canonical bar frame in, ``token, ts`` and every feature out.
* :class:`FeatureStream` — streaming: per-token state advanced one minute-batch at a time, with
  per-token readiness, snapshot and restore.
* :func:`build_spec` / :class:`FeatureSpec` — names, parameters, warm-ups and the spec hash.
* :class:`TokenTable` — which row of every per-token state array is which token's (shared with the
  decision path).
"""

from memed.features.batch import compute_features
from memed.features.numba_cache import invalidate_if_changed
from memed.features.spec import ALL_FEATURES, FeatureDef, FeatureSpec, build_spec
from memed.features.stream import FeatureStream, StreamUpdate, stream_features
from memed.features.tokens import TokenTable

__all__ = [
    "ALL_FEATURES",
    "FeatureDef",
    "FeatureSpec",
    "FeatureStream",
    "StreamUpdate",
    "TokenTable",
    "build_spec",
    "compute_features",
    "stream_features",
]

# numba compiles (or loads its cache) on a kernel's first call, not at import: clearing a cache built for
# other kernel sources here, before any call, is early enough
invalidate_if_changed()
