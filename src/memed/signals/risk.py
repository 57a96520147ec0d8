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

from memed.config import RiskConfig
from memed.signals.policy import A_BUY, A_SELL, A_STRONG_BUY, A_STRONG_SELL

NOTIONAL_ALPHA = 2.0 / 31.0
"""Smoothing of the recent traded notional per bar (close x volume) that caps a position: a 30-bar EWMA."""


@dataclass
class RiskPlan:
    """Arrays [N]; NaN for tokens without a trade (HOLD)."""

    entry: np.ndarray
    stop_loss: np.ndarray
    take_profit: np.ndarray
    units: np.ndarray
    notional: np.ndarray
    risk_reward: np.ndarray
    cap: list[str]
    """Per token, what bound the size: risk, equity, volume, liquidity, kelly ('' for HOLD)."""


def size_positions(
    action: np.ndarray,
    p: np.ndarray,
    close: np.ndarray,
    atr: np.ndarray,
    recent_notional: np.ndarray,
    liquidity: np.ndarray,
    cfg: RiskConfig,
) -> RiskPlan:
    side = np.where(np.isin(action, (A_BUY, A_STRONG_BUY)), 1.0, 0.0)
    side = np.where(np.isin(action, (A_SELL, A_STRONG_SELL)), -1.0, side)
    trade = (side != 0) & np.isfinite(atr) & (atr > 0) & np.isfinite(close)
    with np.errstate(invalid="ignore", divide="ignore"):
        stop_dist = cfg.stop_atr * atr
        take_dist = cfg.take_profit_atr * atr
        risk_units = cfg.equity * cfg.risk_per_trade / stop_dist
        caps = {
            "risk": risk_units * close,
            "equity": np.full(len(close), cfg.max_position_fraction * cfg.equity),
            "volume": np.where(
                np.isfinite(recent_notional), cfg.max_volume_fraction * recent_notional, np.inf
            ),
            "liquidity": np.where(np.isfinite(liquidity), cfg.max_liquidity_fraction * liquidity, np.inf),
        }
        payoff = cfg.take_profit_atr / cfg.stop_atr
        if cfg.kelly_fraction > 0:
            p_win = np.where(side > 0, p, 1.0 - p)
            kelly = np.clip(p_win - (1.0 - p_win) / payoff, 0.0, None)
            caps["kelly"] = cfg.kelly_fraction * kelly * cfg.equity
        names = list(caps)
        stacked = np.vstack([caps[k] for k in names])
        which = np.argmin(stacked, axis=0)
        notional = np.min(stacked, axis=0)
    nan = np.full(len(close), np.nan)
    notional = np.where(trade, notional, nan)
    return RiskPlan(
        entry=np.where(trade, close, nan),
        stop_loss=np.where(trade, close - side * stop_dist, nan),
        take_profit=np.where(trade, close + side * take_dist, nan),
        units=np.where(trade, notional / close, nan),
        notional=notional,
        risk_reward=np.where(trade, cfg.take_profit_atr / cfg.stop_atr, nan),
        cap=[names[w] if t else "" for w, t in zip(which.tolist(), trade.tolist(), strict=True)],
    )
