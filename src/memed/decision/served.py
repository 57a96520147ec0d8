"""Every family's served probabilities over a history, as a frame: what the start-truncation check
compares when the *past* is cut (``memed check start --models``).

Each family is replayed alone through the history driver (the backtest's replay, the daemon's decisions
bit for bit), so its column is exactly what the daemon would serve from it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from memed.config import RiskConfig, SignalsConfig
from memed.data.frames import minutes_to_datetime
from memed.decision.path import DecisionPath
from memed.models.registry import ModelSet


def served_probabilities(model_set: ModelSet, bars: pl.DataFrame) -> pl.DataFrame:
    """``token, ts, ready`` and ``<family>_p<h>`` for every family of ``model_set`` and horizon; ``ready``
    is true where every family serves a probability (past the features' warm-up and each sequence model's
    own start)."""
    cols: dict[str, np.ndarray] = {}
    keys: pl.DataFrame | None = None
    ready: np.ndarray | None = None
    for name in model_set.runners:
        path = DecisionPath(model_set, SignalsConfig(models=(name,)), RiskConfig())  # type: ignore[arg-type]
        d = path.process_history(bars, overlap=False)
        if keys is None:
            keys = pl.DataFrame({"token": d.tokens, "ts": d.ts_minutes})
            keys = keys.with_columns(minutes_to_datetime("ts"))
        served = ~np.isnan(d.horizon_p).any(axis=1)
        ready = served if ready is None else ready & served
        for k, h in enumerate(d.horizons):
            cols[f"{name}_p{h}"] = d.horizon_p[:, k]
    if keys is None or ready is None:
        raise ValueError("the model set serves no model")
    return keys.with_columns(pl.Series("ready", ready), *(pl.Series(c, v) for c, v in cols.items()))
