"""The exit rule of a position, one for the simulator and for the policy's fit on validation.

From the entry bar on, each bar's low and high are checked against the stop-loss and the take-profit; when
one bar touches both, the stop is assumed first; a bar that gaps through a level fills at its open. A
position that hits neither exits at the close of the last bar at or before the deadline (the horizon).
"""

from __future__ import annotations

import numpy as np
from numba import njit

EXIT_REASONS = ("stop_loss", "take_profit", "horizon", "signal")
EXIT_STOP, EXIT_TAKE, EXIT_HORIZON, EXIT_SIGNAL = range(4)


@njit(cache=True)
def first_exit(
    ts: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    i: int,
    end: int,
    side: float,
    stop: float,
    take: float,
    deadline: float,
) -> tuple[int, float, int]:
    """Scan bars from the entry bar ``i`` (rows of one token up to ``end``) for the stop, the
    take-profit or the horizon: (exit row, price before slippage, reason code)."""
    j_end = i
    while j_end + 1 < end and ts[j_end + 1] <= deadline:
        j_end += 1
    for k in range(i, j_end + 1):
        if side > 0:
            hit_stop = np.isfinite(stop) and low[k] <= stop
            hit_take = np.isfinite(take) and high[k] >= take
        else:
            hit_stop = np.isfinite(stop) and high[k] >= stop
            hit_take = np.isfinite(take) and low[k] <= take
        if hit_stop:  # both in one bar: the stop first
            price = min(stop, open_[k]) if side > 0 else max(stop, open_[k])
            return k, price if k > i else stop, EXIT_STOP
        if hit_take:
            price = max(take, open_[k]) if side > 0 else min(take, open_[k])
            return k, price if k > i else take, EXIT_TAKE
    return j_end, close[j_end], EXIT_HORIZON
