"""BUY / HOLD / SELL from the decision probability, with strong bands and every HOLD rule and its reason:
``warming_up``, ``dead``, ``no_model`` (:func:`decide`) and ``no_volatility`` (:func:`hold_unsized`).

Each decision has a side: ``long`` for a BUY; for a SELL, ``short`` when ``signals.sides`` is ``both``
and ``exit`` (leave or avoid the token, open nothing) when it is ``long``, the default: spot memecoins
cannot be shorted. A HOLD has none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from memed.config import SignalsConfig
from memed.models.manifest import EdgeFit

ACTIONS = ("STRONG_SELL", "SELL", "HOLD", "BUY", "STRONG_BUY")
A_STRONG_SELL, A_SELL, A_HOLD, A_BUY, A_STRONG_BUY = range(5)
REASONS = ("", "warming_up", "dead", "no_model", "no_volatility", "no_edge")
R_NONE, R_WARMING, R_DEAD, R_NO_MODEL, R_NO_VOL, R_NO_EDGE = range(6)
SIDES = ("", "long", "short", "exit")
S_NONE, S_LONG, S_SHORT, S_EXIT = range(4)


@dataclass
class Decision:
    action: np.ndarray  # int8 index into ACTIONS
    reason: np.ndarray  # int8 index into REASONS
    p: np.ndarray  # decision probability (NaN when HOLD for a reason)
    strength: np.ndarray  # |p - 0.5| * 2, 0 for HOLD with a reason
    side: np.ndarray  # int8 index into SIDES


@njit(cache=True, nogil=True)
def decision_p(horizon_p: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The decision probability: the mean of the decision horizons' ensemble probabilities, summed in
    ``cols`` order (NaN where any of them is NaN)."""
    out = np.empty(horizon_p.shape[0])
    for i in range(horizon_p.shape[0]):
        t = 0.0
        for k in cols:
            t += horizon_p[i, k]
        out[i] = t / len(cols)
    return out


@njit(cache=True, nogil=True)
def _decide(p: np.ndarray, ready: np.ndarray, dead: np.ndarray, buy: float, strong_buy: float, sell: float,
            strong_sell: float, long_only: bool, action: np.ndarray, reason: np.ndarray, p_out: np.ndarray,
            strength: np.ndarray, side: np.ndarray) -> None:  # fmt: skip
    for i in range(len(p)):
        side[i] = S_NONE
        x = p[i]
        r = R_WARMING if not ready[i] else (R_DEAD if dead[i] else (R_NO_MODEL if np.isnan(x) else R_NONE))
        reason[i] = r
        if r != R_NONE:
            action[i] = A_HOLD
            p_out[i] = np.nan
            strength[i] = 0.0
            continue
        a = A_HOLD
        if x <= strong_sell:  # the last band that matches wins, strong over plain
            a = A_STRONG_SELL
        elif x <= sell:
            a = A_SELL
        elif x >= strong_buy:
            a = A_STRONG_BUY
        elif x >= buy:
            a = A_BUY
        action[i] = a
        p_out[i] = x
        strength[i] = abs(x - 0.5) * 2.0
        if a in (A_BUY, A_STRONG_BUY):
            side[i] = S_LONG
        elif a in (A_SELL, A_STRONG_SELL):
            side[i] = S_EXIT if long_only else S_SHORT


def decide(p: np.ndarray, ready: np.ndarray, dead: np.ndarray, cfg: SignalsConfig) -> Decision:
    """``p`` [N] decision probability; ``ready``/``dead`` [N] booleans. A HOLD reason, in precedence
    order: warming_up, dead, no_model; otherwise the action is the band ``p`` falls in (a sell band
    wins over a buy band if thresholds overlap)."""
    n = len(p)
    d = Decision(np.empty(n, np.int8), np.empty(n, np.int8), np.empty(n), np.empty(n), np.empty(n, np.int8))
    _decide(np.asarray(p, np.float64), np.asarray(ready, np.bool_), np.asarray(dead, np.bool_),
            cfg.buy_threshold, cfg.strong_buy_threshold, cfg.sell_threshold, cfg.strong_sell_threshold,
            cfg.sides == "long", d.action, d.reason, d.p, d.strength, d.side)  # fmt: skip
    return d


def expected_long(p: np.ndarray, up: float, down: float, cost: float) -> np.ndarray:
    """A long's expected net log return held for the decision horizon: ``p U - (1 - p) D - c`` (a
    short's is ``-E - 2c``). The one formula the policy is fitted with and served by."""
    out: np.ndarray = p * up - (1 - p) * down - cost
    return out


def apply_edge(d: Decision, fit: EdgeFit, long_only: bool) -> None:
    """The cost-aware policy over a banded decision, in place: each scored row's expected net return of a
    long, ``E = p U - (1 - p) D - c`` (and of a short, ``(1 - p) D - p U - c``), from ``fit`` (fitted on
    validation). BUY where the long side has an edge and ``E`` clears its margin; SELL where the short
    side does (``both``) or, long-only, where a long is expected to lose (exit); HOLD otherwise, with
    reason ``no_edge`` when validation found no edge on any side it may trade."""
    scored = d.reason == R_NONE
    p = d.p
    e_long = expected_long(p, fit.up_move, fit.down_move, fit.cost)
    e_short = -e_long - 2 * fit.cost
    buy = scored & fit.long_edge & (e_long > fit.long_margin)
    if long_only:
        sell = scored & fit.long_edge & (e_long + fit.cost < 0)  # a long expected to lose: exit
        edge = fit.long_edge
    else:  # a set fitted long-only has no short side to serve
        sell = scored & fit.short_edge & (e_short > fit.short_margin)
        edge = fit.long_edge or fit.short_edge
    d.action[scored] = A_HOLD
    d.side[scored] = S_NONE
    d.action[buy] = A_BUY
    d.side[buy] = S_LONG
    d.action[sell] = A_SELL
    d.side[sell] = S_EXIT if long_only else S_SHORT
    if not edge:
        d.reason[scored] = R_NO_EDGE
        d.strength[scored] = 0.0


def hold_unsized(d: Decision, notional: np.ndarray) -> None:
    """A signal that opens a position (long or short) which risk sizing could not size (``notional`` not
    finite: no ATR yet, a zero ATR, a NaN Kelly bound) becomes HOLD with reason ``no_volatility``, in
    place. An exit needs no size."""
    unsized = ((d.side == S_LONG) | (d.side == S_SHORT)) & ~np.isfinite(notional)
    d.action[unsized] = A_HOLD
    d.reason[unsized] = R_NO_VOL
    d.strength[unsized] = 0.0
    d.p[unsized] = np.nan
    d.side[unsized] = S_NONE
