"""The policy (bands, strong bands and every HOLD rule with its reason) and ATR risk sizing: pure
functions of arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memed.config import RiskConfig, SignalsConfig
from memed.signals.policy import (
    A_BUY,
    A_HOLD,
    A_SELL,
    ACTIONS,
    R_NO_VOL,
    REASONS,
    SIDES,
    decide,
    hold_unsized,
)
from memed.signals.risk import size_positions


def test_policy_bands_and_reasons() -> None:
    cfg = SignalsConfig()
    p = np.array([0.70, 0.56, 0.50, 0.44, 0.30, np.nan, 0.9, 0.9])
    ready = np.array([True, True, True, True, True, True, False, True])
    dead = np.array([False] * 7 + [True])
    d = decide(p, ready, dead, cfg)
    assert [ACTIONS[a] for a in d.action] == [
        "STRONG_BUY",
        "BUY",
        "HOLD",
        "SELL",
        "STRONG_SELL",
        "HOLD",
        "HOLD",
        "HOLD",
    ]
    assert [REASONS[r] for r in d.reason][5:] == ["no_model", "warming_up", "dead"]
    assert d.strength[0] == pytest.approx(0.4)


def test_risk_sizing_caps_and_directions() -> None:
    cfg = RiskConfig(
        equity=10_000, risk_per_trade=0.01, stop_atr=2, take_profit_atr=3, max_position_fraction=0.5,
        max_volume_fraction=0.05, max_liquidity_fraction=0.02,
    )  # fmt: skip
    # sides: long, short, none, long (volume-capped), long (no ATR)
    action = np.array([1, 2, 0, 1, 1], dtype=np.int8)
    close = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    atr = np.array([0.05, 0.05, 0.05, 0.05, 0.0])
    notional = np.array([1e9, 1e9, 1e9, 1000.0, 1e9])
    liq = np.array([np.nan, 1e9, np.nan, np.nan, np.nan])
    r = size_positions(action, np.full(5, 0.6), close, atr, notional, liq, cfg)
    # risk: 100 lost over a 0.1 stop -> 1000 units
    assert r.units[0] == pytest.approx(1000.0)
    assert (r.stop_loss[0], r.take_profit[0]) == (pytest.approx(0.9), pytest.approx(1.15))
    assert (r.stop_loss[1], r.take_profit[1]) == (pytest.approx(1.1), pytest.approx(0.85))  # short
    assert r.risk_reward[0] == pytest.approx(1.5)
    assert math.isnan(r.notional[2])
    assert r.notional[3] == pytest.approx(50.0)
    assert r.cap_name(3) == "volume"
    assert math.isnan(r.notional[4])
    kelly = size_positions(action[:1], np.array([0.45]), close[:1], atr[:1], notional[:1], liq[:1],
                           RiskConfig(kelly_fraction=0.5, max_position_fraction=1.0))  # fmt: skip
    # Kelly(0.45, payoff 1.5) = 0.45 - 0.55 / 1.5 = 0.0833; half of it of 10k equity
    assert kelly.notional[0] == pytest.approx(0.5 * (0.45 - 0.55 / 1.5) * 10_000)
    assert kelly.cap_name(0) == "kelly"
    # a NaN probability under Kelly sizes nothing (the path then holds with reason no_volatility)
    nan_p = size_positions(action[:1], np.array([np.nan]), close[:1], atr[:1], notional[:1], liq[:1],
                           RiskConfig(kelly_fraction=0.5))  # fmt: skip
    assert math.isnan(nan_p.notional[0])
    assert nan_p.cap_name(0) == ""
    # equal caps: the first in CAPS order is named (risk 1000 units x 1.0 = equity cap 1000)
    tie = size_positions(action[:1], np.array([0.6]), close[:1], atr[:1], notional[:1], liq[:1],
                         RiskConfig(equity=10_000, risk_per_trade=0.01, stop_atr=2,
                                    max_position_fraction=0.1))  # fmt: skip
    assert tie.notional[0] == pytest.approx(1000.0)
    assert tie.cap_name(0) == "risk"


def test_long_only_sells_are_exits_that_need_no_size() -> None:
    """The default (``signals.sides = "long"``): a SELL is an exit -- side ``exit``, no risk plan, and
    it stays a SELL when nothing could be sized (an exit opens nothing); a BUY is a long."""
    p = np.array([0.7, 0.3, 0.5])
    d = decide(p, np.ones(3, bool), np.zeros(3, bool), SignalsConfig())
    assert [SIDES[s] for s in d.side] == ["long", "exit", ""]
    plan = size_positions(d.side, p, np.ones(3), np.full(3, 0.05), np.full(3, 1e9), np.full(3, np.nan),
                          RiskConfig())  # fmt: skip
    assert np.isfinite(plan.notional[0])
    assert np.isnan(plan.notional[1:]).all()  # no short is sized
    hold_unsized(d, plan.notional)
    assert d.action.tolist() == [ACTIONS.index("STRONG_BUY"), ACTIONS.index("STRONG_SELL"), A_HOLD]
    assert [REASONS[r] for r in d.reason] == ["", "", ""]
    both = decide(p, np.ones(3, bool), np.zeros(3, bool), SignalsConfig(sides="both"))
    assert [SIDES[s] for s in both.side] == ["long", "short", ""]


def test_a_trade_risk_sizing_cannot_size_becomes_hold_no_volatility() -> None:
    p = np.array([0.7, 0.3, 0.7, 0.5])
    d = decide(p, np.ones(4, bool), np.zeros(4, bool), SignalsConfig(sides="both"))
    assert d.action.tolist() == [ACTIONS.index("STRONG_BUY"), ACTIONS.index("STRONG_SELL"), 4, A_HOLD]
    notional = np.array([np.nan, np.nan, 100.0, np.nan])  # no ATR for the first two
    hold_unsized(d, notional)
    assert d.action.tolist() == [A_HOLD, A_HOLD, ACTIONS.index("STRONG_BUY"), A_HOLD]
    assert d.reason.tolist()[:2] == [R_NO_VOL, R_NO_VOL]
    assert [REASONS[r] for r in d.reason] == ["no_volatility", "no_volatility", "", ""]
    assert np.isnan(d.p[:2]).all()
    assert d.strength[:2].tolist() == [0.0, 0.0]
    assert d.p[2] == 0.7
    assert {A_BUY, A_SELL}.isdisjoint(d.action[:2].tolist())
    assert d.side[:2].tolist() == [0, 0]
