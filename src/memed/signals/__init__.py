"""Ensemble, policy and ATR risk sizing: pure, vectorised functions (no I/O, no clocks)."""

from memed.signals.ensemble import ensemble
from memed.signals.policy import ACTIONS, REASONS, Decision, decide, hold_unsized
from memed.signals.risk import RiskPlan, size_positions
from memed.signals.schema import SIGNAL_VERSION, Signal

__all__ = [
    "ACTIONS",
    "REASONS",
    "SIGNAL_VERSION",
    "Decision",
    "RiskPlan",
    "Signal",
    "decide",
    "ensemble",
    "hold_unsized",
    "size_positions",
]
