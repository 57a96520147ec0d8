"""Decisions to wire signals (:class:`~memed.signals.schema.Signal`, versioned JSON): built at the edge,
where they leave the process, never inside the decision path."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from memed.decision.result import PLAN_COLUMNS, Decisions
from memed.signals.policy import ACTIONS, REASONS, SIDES
from memed.signals.risk import CAPS
from memed.signals.schema import Risk, Signal, idempotency_keys


def _nan_to_none(a: np.ndarray) -> list[Any]:
    obj = a.astype(object)
    obj[np.isnan(a)] = None
    out: list[Any] = obj.tolist()
    return out


def _iso_minute(ts_minutes: float) -> str:
    return datetime.fromtimestamp(ts_minutes * 60.0, UTC).isoformat().replace("+00:00", "Z")


def to_signals(d: Decisions) -> list[Signal]:
    """One :class:`Signal` per row of ``d``, in its order (every per-row value prepared as a list first:
    this runs for every token every minute)."""
    if not len(d):
        return []
    stamps = {m: _iso_minute(m) for m in np.unique(d.ts_minutes).tolist()}
    names = [str(h) for h in d.horizons]
    tokens = d.tokens.to_list()
    ts = [stamps[m] for m in d.ts_minutes.tolist()]
    model_set, spec = d.model_set, d.feature_spec
    keys = idempotency_keys(tokens, ts, model_set)
    hp = d.horizon_p
    horizons = [
        dict(zip(names, row, strict=True))
        for row in (_nan_to_none(hp) if np.isnan(hp).any() else hp.tolist())
    ]
    risks = _risks(d)
    return [
        Signal(
            key=k,
            token=t,
            ts=s,
            action=ACTIONS[a],
            strength=st,
            p_up=p,
            horizons=h,
            reason=REASONS[r],
            side=SIDES[sd],
            risk=rk,
            model_set=model_set,
            feature_spec=spec,
        )
        for k, t, s, a, st, p, h, r, sd, rk in zip(
            keys,
            tokens,
            ts,
            d.action.tolist(),
            d.strength.tolist(),
            _nan_to_none(d.p),
            horizons,
            d.reason.tolist(),
            d.side.tolist(),
            risks,
            strict=True,
        )
    ]


def _risks(d: Decisions) -> list[Risk | None]:
    """Each row's risk plan (None without a trade)."""
    out: list[Risk | None] = [None] * len(d)
    rows = np.flatnonzero(np.isfinite(d.risk.notional))
    if not len(rows):
        return out
    plan = np.column_stack([getattr(d.risk, c)[rows] for c in PLAN_COLUMNS]).tolist()
    for i, (e, sl, tp, units, notional, rr), cap in zip(
        rows.tolist(), plan, d.risk.cap[rows].tolist(), strict=True
    ):
        out[i] = Risk(
            entry=e,
            stop_loss=sl,
            take_profit=tp,
            position_size=units,
            notional=notional,
            risk_reward=rr,
            capped_by=CAPS[cap],
            hold_minutes=d.hold_minutes,
        )
    return out
