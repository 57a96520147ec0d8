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


def idempotency_keys(tokens: list[str], stamps: list[str], model_set: str) -> list[str]:
    """Each signal's key: the first 32 hex digits of sha256("token|ts|model_set") for each (token, ts)
    pair, the "|ts|model_set" tail made once per distinct ts (this runs for every token every minute)."""
    tails = {s: f"|{s}|{model_set}" for s in set(stamps)}
    pairs = zip(tokens, stamps, strict=True)
    return [hashlib.sha256((t + tails[s]).encode()).hexdigest()[:32] for t, s in pairs]
