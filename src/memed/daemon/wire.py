"""Decisions to wire signals (:class:`~memed.signals.schema.Signal`, versioned JSON): built at the edge,
where they leave the process, never inside the decision path."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from memed.decision.result import PLAN_COLUMNS, Decisions
from memed.signals.policy import ACTIONS, REASONS, SIDES
from memed.signals.risk import CAPS
from memed.signals.schema import Risk, Signal, idempotency_key


def _nan_to_none(a: np.ndarray) -> list[Any]:
    obj = a.astype(object)
    obj[np.isnan(a)] = None
    out: list[Any] = obj.tolist()
    return out


def _iso_minute(ts_minutes: float) -> str:
    return datetime.fromtimestamp(ts_minutes * 60.0, UTC).isoformat().replace("+00:00", "Z")


def to_signals(d: Decisions) -> list[Signal]:
    """One :class:`Signal` per row of ``d``, in its order."""
    if not len(d):
        return []
    stamps = {m: _iso_minute(m) for m in np.unique(d.ts_minutes).tolist()}
    names = [str(h) for h in d.horizons]
    hp = _nan_to_none(d.horizon_p)
    p_list = _nan_to_none(d.p)
    strength = d.strength.tolist()
    actions = [ACTIONS[a] for a in d.action.tolist()]
    reasons = [REASONS[x] for x in d.reason.tolist()]
    sides = [SIDES[x] for x in d.side.tolist()]
    caps = [CAPS[c] for c in d.risk.cap.tolist()]
    has_risk = np.isfinite(d.risk.notional).tolist()
    plan = np.column_stack([getattr(d.risk, c) for c in PLAN_COLUMNS]).tolist()
    out = []
    for i, (token, minute) in enumerate(zip(d.tokens.to_list(), d.ts_minutes.tolist(), strict=True)):
        ts = stamps[minute]
        risk = None
        if has_risk[i]:
            e, sl, tp, units, notional, rr = plan[i]
            risk = Risk(entry=e, stop_loss=sl, take_profit=tp, position_size=units, notional=notional,
                        risk_reward=rr, capped_by=caps[i], hold_minutes=d.hold_minutes)  # fmt: skip
        out.append(
            Signal(
                key=idempotency_key(token, ts, d.model_set),
                token=token,
                ts=ts,
                action=actions[i],
                strength=strength[i],
                p_up=p_list[i],
                horizons=dict(zip(names, hp[i], strict=True)),
                reason=reasons[i],
                side=sides[i],
                risk=risk,
                model_set=d.model_set,
                feature_spec=d.feature_spec,
            )
        )
    return out
