"""The decision path's one result container, for a minute of tokens and for a whole history alike."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import polars as pl

from memed.signals.risk import RiskPlan

PLAN_COLUMNS = ("entry", "stop_loss", "take_profit", "units", "notional", "risk_reward")


def member_column(member: str, horizon: int) -> str:
    """An ensemble member's calibrated ``p_up`` column in the backtest's signals."""
    return f"m_{member}_{horizon}"


@dataclass
class Decisions:
    """One row per decided bar (stale bars are left out): from the minute driver, the tokens of one minute
    in input order; from the history driver, every bar sorted by time then token."""

    tokens: pl.Series
    ts_minutes: np.ndarray  # float64 epoch minutes of each row's bar
    action: np.ndarray  # int8 index into signals.policy.ACTIONS
    reason: np.ndarray  # int8 index into signals.policy.REASONS
    p: np.ndarray  # decision probability (NaN when HOLD for a reason)
    strength: np.ndarray
    side: np.ndarray  # int8 index into signals.policy.SIDES
    horizon_p: np.ndarray  # [rows, H] ensemble p_up per horizon
    risk: RiskPlan
    close: np.ndarray
    atr: np.ndarray  # ATR(14) in price units (NaN while warming up)
    recent_notional: np.ndarray  # 30-bar EWMA of close x volume
    horizons: tuple[int, ...]
    model_set: str
    feature_spec: str
    hold_minutes: int = 0
    """How long a trade on these signals is meant to be held (:attr:`Decider.hold_minutes`)."""
    stale: int = 0
    """Input bars left out: duplicates and out-of-order bars, ignored as the feature stream ignores them."""
    restarts: int = 0
    """Bars after a long gap, which restarted their token's features."""
    features: np.ndarray | None = None
    """The minute driver's feature rows [rows, F] (the drift check reads them); None from the history."""
    ready: np.ndarray | None = None
    """Which of ``features`` are past their warm-up (the ones the models scored)."""
    members: dict[str, np.ndarray] = field(default_factory=dict)
    """Each served model's calibrated ``p_up`` [rows, H] (NaN: it did not score): the ensemble's members,
    which the delayed-label scoring scores on their own."""

    def __len__(self) -> int:
        return len(self.action)

    @classmethod
    def concat(cls, parts: list[Decisions], horizons: tuple[int, ...], model_set: str, feature_spec: str,
               hold_minutes: int) -> Decisions:  # fmt: skip
        """The minute driver's results one after another, as one (the per-minute fields dropped)."""

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(d, name) for d in parts]) if parts else np.empty(0)

        def cat_risk(name: str) -> np.ndarray:
            return np.concatenate([getattr(d.risk, name) for d in parts]) if parts else np.empty(0)

        h = len(horizons)
        members = sorted({m for d in parts for m in d.members})
        return cls(
            tokens=pl.concat([d.tokens for d in parts]) if parts else pl.Series("token", [], pl.String),
            ts_minutes=cat("ts_minutes"),
            action=cat("action").astype(np.int8),
            reason=cat("reason").astype(np.int8),
            p=cat("p"),
            strength=cat("strength"),
            side=cat("side").astype(np.int8),
            horizon_p=np.concatenate([d.horizon_p for d in parts]) if parts else np.empty((0, h)),
            risk=RiskPlan(*(cat_risk(f.name) for f in fields(RiskPlan))),
            close=cat("close"),
            atr=cat("atr"),
            recent_notional=cat("recent_notional"),
            horizons=horizons,
            model_set=model_set,
            feature_spec=feature_spec,
            hold_minutes=hold_minutes,
            stale=sum(d.stale for d in parts),
            restarts=sum(d.restarts for d in parts),
            members={m: np.concatenate([d.members[m] for d in parts]) for m in members},
        )

    def columns(self) -> dict[str, np.ndarray]:
        """Every per-row array by output column name (``p_<h>`` per horizon): the backtest's signals."""
        return {
            "action": self.action,
            "reason": self.reason,
            "side": self.side,
            "p_up": self.p,
            "strength": self.strength,
            "atr": self.atr,
            "recent_notional": self.recent_notional,
            "close": self.close,
            "hold_minutes": np.full(len(self.action), self.hold_minutes, dtype=np.int32),
            **{c: getattr(self.risk, c) for c in PLAN_COLUMNS},
            **{f"p_{h}": self.horizon_p[:, k] for k, h in enumerate(self.horizons)},
            **{
                member_column(m, h): p[:, k]
                for m, p in self.members.items()
                for k, h in enumerate(self.horizons)
            },
        }
