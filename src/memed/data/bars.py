"""The bar: its fields in the one order every array of bars uses, and the one rule of what a valid bar is.

Ticks decoded live (``daemon/ticks.py``), files loaded for training and backtests
(:func:`~memed.data.schema.validate_bars`) and the feature kernel's input matrix all hold bars as rows or
columns of float64 in :data:`BAR_FIELDS` order, addressed by the named indices below (never ``bars[3]``).
Absent optional fields (liquidity, buys, sells, market cap) are NaN.

:func:`bar_verdicts` is the validity rule, and the only one: the tick parser and the loaders both call it,
so a bar the daemon refuses is one the backtest never sees, with the same reason. A bar is checked in
this order and counted under its first failing reason:

``bad_price``
    open, high, low or close is not a number within [``PRICE_MIN``, ``PRICE_MAX``] (1e-18 .. 1e15: wider
    than any quoted token, narrow enough that no feature's arithmetic underflows to a subnormal or
    overflows);
``high_below_low``
    high < low;
``price_outside_range``
    open or close lies outside [low, high];
``bad_volume``
    volume is not within [0, ``VALUE_MAX``] (1e21);
``bad_optional``
    liquidity, buys, sells or market cap is present (not NaN) and not within [0, ``VALUE_MAX``].
"""

from __future__ import annotations

import numpy as np
from numba import njit

BAR_FIELDS = ("open", "high", "low", "close", "volume", "liquidity", "buys", "sells", "market_cap")
"""Bar fields in array order (rows of the (9, n) bar matrix)."""
OPEN, HIGH, LOW, CLOSE, VOLUME, LIQUIDITY, BUYS, SELLS, MARKET_CAP = range(len(BAR_FIELDS))
OPTIONAL_FIELDS = BAR_FIELDS[LIQUIDITY:]
"""Fields a feed may leave out (NaN when absent)."""

PRICE_MIN = 1e-18
PRICE_MAX = 1e15
VALUE_MAX = 1e21
"""Bounds of a valid bar's prices, and of its volume and optional fields (see the module docstring)."""

BAR_REASONS = ("", "bad_price", "high_below_low", "price_outside_range", "bad_volume", "bad_optional")
"""Verdict codes of :func:`bar_verdicts`: 0 is a valid bar, the others name what is wrong."""
V_OK, V_BAD_PRICE, V_HIGH_BELOW_LOW, V_OUTSIDE_RANGE, V_BAD_VOLUME, V_BAD_OPTIONAL = range(len(BAR_REASONS))
BAR_PROBLEMS = (
    "",
    "open, high, low and close must be prices within [1e-18, 1e15]",
    "high is below low",
    "open or close lies outside [low, high]",
    "volume must be a number within [0, 1e21]",
    "liquidity, buys, sells and market_cap must be within [0, 1e21] where given",
)
"""What each verdict means, in words (for logs and dead letters)."""


@njit(cache=True, inline="always")
def _price(x: float) -> bool:
    return PRICE_MIN <= x <= PRICE_MAX  # False for NaN


@njit(cache=True, nogil=True)
def _verdicts(x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[1]):
        o, h, lo, c, v = x[OPEN, i], x[HIGH, i], x[LOW, i], x[CLOSE, i], x[VOLUME, i]
        code = V_OK
        if not (_price(o) and _price(h) and _price(lo) and _price(c)):
            code = V_BAD_PRICE
        elif h < lo:
            code = V_HIGH_BELOW_LOW
        elif o < lo or o > h or c < lo or c > h:
            code = V_OUTSIDE_RANGE
        elif not (0.0 <= v <= VALUE_MAX):
            code = V_BAD_VOLUME
        else:
            for k in range(LIQUIDITY, len(BAR_FIELDS)):
                y = x[k, i]
                if not np.isnan(y) and not (0.0 <= y <= VALUE_MAX):
                    code = V_BAD_OPTIONAL
                    break
        out[i] = code


def bar_verdicts(bars: np.ndarray) -> np.ndarray:
    """The verdict (an index into :data:`BAR_REASONS`) of each bar of a (9, n) float64 matrix."""
    x = np.asarray(bars, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(BAR_FIELDS):  # noqa: PLR2004 - a matrix
        raise ValueError(f"bars must be a ({len(BAR_FIELDS)}, n) matrix, got shape {x.shape}")
    out = np.empty(x.shape[1], dtype=np.int8)
    _verdicts(x, out)
    return out
