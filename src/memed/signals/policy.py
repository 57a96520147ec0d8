"""BUY / HOLD / SELL from the decision probability, with strong bands and HOLD reasons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memed.config import SignalsConfig

ACTIONS = ("STRONG_SELL", "SELL", "HOLD", "BUY", "STRONG_BUY")
A_STRONG_SELL, A_SELL, A_HOLD, A_BUY, A_STRONG_BUY = range(5)
REASONS = ("", "warming_up", "dead", "no_model", "no_volatility")
R_NONE, R_WARMING, R_DEAD, R_NO_MODEL, R_NO_VOL = range(5)


@dataclass
class Decision:
    action: np.ndarray  # int8 index into ACTIONS
    reason: np.ndarray  # int8 index into REASONS
    p: np.ndarray  # decision probability (NaN when HOLD for a reason)
    strength: np.ndarray  # |p - 0.5| * 2, 0 for HOLD with a reason


def decide(p: np.ndarray, ready: np.ndarray, dead: np.ndarray, cfg: SignalsConfig) -> Decision:
    """``p`` [N] decision probability; ``ready``/``dead`` [N] booleans."""
    n = len(p)
    action = np.full(n, A_HOLD, dtype=np.int8)
    reason = np.full(n, R_NONE, dtype=np.int8)
    reason[np.isnan(p)] = R_NO_MODEL
    reason[dead] = R_DEAD
    reason[~ready] = R_WARMING
    ok = reason == R_NONE
    action[ok & (p >= cfg.buy_threshold)] = A_BUY
    action[ok & (p >= cfg.strong_buy_threshold)] = A_STRONG_BUY
    action[ok & (p <= cfg.sell_threshold)] = A_SELL
    action[ok & (p <= cfg.strong_sell_threshold)] = A_STRONG_SELL
    strength = np.where(ok, np.abs(p - 0.5) * 2.0, 0.0)
    return Decision(action, reason, np.where(ok, p, np.nan), strength)
