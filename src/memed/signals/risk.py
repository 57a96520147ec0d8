"""ATR-based risk plans.

For a BUY at ``entry`` (the bar's close): stop = entry - stop_atr x ATR, take-profit = entry +
take_profit_atr x ATR (mirrored for a SELL, i.e. a short). Position units = equity x risk_per_trade /
stop distance, then the notional is capped by max_position_fraction x equity, by max_volume_fraction x
the recent traded notional per bar, by max_liquidity_fraction x liquidity (where the feed has it), and,
when enabled, by kelly_fraction x Kelly(p, payoff) x equity with Kelly = p - (1 - p) / payoff.
Risk/reward = take-profit distance / stop distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from memed.config import RiskConfig
from memed.signals.policy import S_LONG, S_SHORT

NOTIONAL_ALPHA = 2.0 / 31.0
"""Smoothing of the recent traded notional per bar (close x volume) that caps a position: a 30-bar EWMA."""


CAPS = ("", "risk", "equity", "volume", "liquidity", "kelly")
"""What bound a position's size, by code (``RiskPlan.cap``); 0: no position (HOLD)."""
CAP_NONE, CAP_RISK, CAP_EQUITY, CAP_VOLUME, CAP_LIQUIDITY, CAP_KELLY = range(6)


@dataclass
class RiskPlan:
    """Arrays [N]; NaN for tokens without a trade (HOLD)."""

    entry: np.ndarray
    stop_loss: np.ndarray
    take_profit: np.ndarray
    units: np.ndarray
    notional: np.ndarray
    risk_reward: np.ndarray
    cap: np.ndarray
    """int8 per token, an index into ``CAPS``: what bound the size (0 for no trade)."""

    def cap_name(self, i: int) -> str:
        """What bound token ``i``'s size: risk, equity, volume, liquidity, kelly ('' for no trade)."""
        return CAPS[int(self.cap[i])]


@njit(cache=True, inline="always")
def _side(s: int) -> float:
    """+1 for a long, -1 for a short, 0 for no position (HOLD, exit)."""
    if s == S_LONG:
        return 1.0
    return -1.0 if s == S_SHORT else 0.0


@njit(cache=True, nogil=True)
def _size(sides: np.ndarray, p: np.ndarray, close: np.ndarray, atr: np.ndarray, recent_notional: np.ndarray,
          liquidity: np.ndarray, equity: float, risk_per_trade: float, stop_atr: float,
          take_profit_atr: float, max_position: float, max_volume: float, max_liquidity: float,
          kelly_fraction: float, out: np.ndarray, cap: np.ndarray) -> None:  # fmt: skip
    """Rows of ``out``: entry, stop, take-profit, units, notional, risk/reward (NaN without a trade).
    The smallest cap wins, the first in ``CAPS`` order on ties; a NaN cap (a NaN probability under
    Kelly) leaves no trade."""
    payoff = take_profit_atr / stop_atr
    risk_budget = equity * risk_per_trade
    for i in range(len(sides)):
        side = _side(sides[i])
        c = close[i]
        x = atr[i]
        cap[i] = CAP_NONE
        for k in range(6):
            out[k, i] = np.nan
        if side == 0.0 or not (np.isfinite(x) and x > 0.0 and np.isfinite(c)):
            continue
        stop_dist = stop_atr * x
        best = risk_budget / stop_dist * c
        which = CAP_RISK
        bound = max_position * equity
        if bound < best:
            best, which = bound, CAP_EQUITY
        rn = recent_notional[i]
        if np.isfinite(rn) and max_volume * rn < best:
            best, which = max_volume * rn, CAP_VOLUME
        liq = liquidity[i]
        if np.isfinite(liq) and max_liquidity * liq < best:
            best, which = max_liquidity * liq, CAP_LIQUIDITY
        if kelly_fraction > 0.0:
            p_win = p[i] if side > 0.0 else 1.0 - p[i]
            kelly = p_win - (1.0 - p_win) / payoff
            if kelly < 0.0:  # noqa: PLR1730 (numba's max(nan, 0.0) is 0.0; a NaN must stay NaN)
                kelly = 0.0
            bound = kelly_fraction * kelly * equity
            if np.isnan(bound):
                continue
            if bound < best:
                best, which = bound, CAP_KELLY
        if np.isnan(best):
            continue
        cap[i] = which
        out[0, i] = c
        out[1, i] = c - side * stop_dist
        out[2, i] = c + side * (take_profit_atr * x)
        out[3, i] = best / c
        out[4, i] = best
        out[5, i] = payoff


def size_positions(
    side: np.ndarray,
    p: np.ndarray,
    close: np.ndarray,
    atr: np.ndarray,
    recent_notional: np.ndarray,
    liquidity: np.ndarray,
    cfg: RiskConfig,
) -> RiskPlan:
    n = len(side)
    out = np.empty((6, n))
    cap = np.empty(n, dtype=np.int8)
    f = np.float64
    _size(np.asarray(side, np.int8), np.asarray(p, f), np.asarray(close, f), np.asarray(atr, f),
          np.asarray(recent_notional, f), np.asarray(liquidity, f), float(cfg.equity),
          float(cfg.risk_per_trade), float(cfg.stop_atr), float(cfg.take_profit_atr),
          float(cfg.max_position_fraction), float(cfg.max_volume_fraction), float(cfg.max_liquidity_fraction),
          float(cfg.kelly_fraction), out, cap)  # fmt: skip
    entry, stop_loss, take_profit, units, notional, risk_reward = out
    return RiskPlan(entry, stop_loss, take_profit, units, notional, risk_reward, cap)
