"""The published signal: versioned JSON, documented in the README.

``key`` is the idempotency key: sha256 of ``token|ts|model_set`` (first 32 hex digits), equal for the
same decision however often it is re-sent.
"""

from __future__ import annotations

import hashlib

import msgspec

SIGNAL_VERSION = 1


class Risk(msgspec.Struct, frozen=True, kw_only=True):
    entry: float
    stop_loss: float
    take_profit: float
    position_size: float
    """Units of the token."""
    notional: float
    risk_reward: float
    capped_by: str
    hold_minutes: int = 0
    """Exit at the latest after this long: the decision horizon the policy was fitted at."""


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    version: int = SIGNAL_VERSION
    key: str
    token: str
    ts: str
    """The bar's event time (ISO 8601, UTC) — never the wall clock."""
    action: str
    strength: float
    p_up: float | None
    """The decision probability: the ensemble p_up at the cost-aware policy's decision horizon (the mean
    over ``signals.decision_horizons`` under the bands)."""
    horizons: dict[str, float | None]
    """Ensemble p_up per horizon in minutes."""
    reason: str = ""
    side: str = ""
    """``long`` (a BUY), ``short`` (a SELL with ``signals.sides = "both"``), ``exit`` (a SELL with
    ``signals.sides = "long"``, the default: leave or avoid the token; no risk plan), or empty (HOLD)."""
    risk: Risk | None = None
    model_set: str
    feature_spec: str


KEY_CHARS = 32


def idempotency_key(token: str, ts: str, model_set: str) -> str:
    return hashlib.sha256(f"{token}|{ts}|{model_set}".encode()).hexdigest()[:KEY_CHARS]
