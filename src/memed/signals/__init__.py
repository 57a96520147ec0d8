"""Ensemble, policy and ATR risk sizing: pure, vectorised functions (no I/O, no clocks)."""

from memed.signals.ensemble import ensemble
from memed.signals.policy import ACTIONS, Decision, decide
from memed.signals.risk import RiskPlan, size_positions
from memed.signals.schema import SIGNAL_VERSION, Signal, hummingbot_payload

__all__ = [
    "ACTIONS",
    "SIGNAL_VERSION",
    "Decision",
    "RiskPlan",
    "Signal",
    "decide",
    "ensemble",
    "hummingbot_payload",
    "size_positions",
]
