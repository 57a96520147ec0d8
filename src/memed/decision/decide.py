"""Models' probabilities to decisions: each model's calibration map, ensemble per horizon, policy, ATR risk
sizing, the HOLD rules.

Both drivers call the same :class:`Decider` (the minute driver on one minute's tokens, the history driver
on each block of a history). Every operation is elementwise per row, so a row's decision does not depend
on which rows it is computed with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
import numpy as np

from memed.config import RiskConfig, SignalsConfig
from memed.errors import ConfigError
from memed.logs import get_logger
from memed.models.manifest import Calibration, EdgeFit, Manifest
from memed.signals.calibration import calibrate_columns
from memed.signals.ensemble import ensemble
from memed.signals.policy import Decision, apply_edge, decide, decision_p, hold_unsized
from memed.signals.risk import RiskPlan, size_positions

log = get_logger("memed.decision")


@dataclass(frozen=True)
class Decider:
    signals: SignalsConfig
    risk: RiskConfig
    n_horizons: int
    decision_cols: np.ndarray
    """Columns of the model set's horizons the decision probability averages: the cost-aware policy's
    horizon, else those ``signals.decision_horizons`` names."""
    calibrations: Mapping[str, tuple[Calibration, ...]] = field(default_factory=dict)
    """Model → its calibration map per horizon (:class:`~memed.models.manifest.Calibration`)."""
    edge: EdgeFit | None = None
    """The cost-aware policy's fit (served when ``signals.policy = "cost_aware"``)."""

    hold_minutes: int = 0
    """How long a signal's trade is meant to be held: the cost-aware policy's decision horizon, else the
    longest of the decision horizons."""

    @classmethod
    def for_manifest(cls, m: Manifest, signals: SignalsConfig, risk: RiskConfig) -> Decider:
        """The decider serving model set ``m``. Under ``cost_aware`` with a fitted policy, the decision
        probability is the ensemble's at the policy's horizon, and the stops and targets are the
        validation-chosen multiples of that horizon's volatility (``ATR x sqrt(horizon bars)``)."""
        cals = {e.name: e.calibration for e in m.models}
        if signals.policy == "cost_aware" and m.edge is None:
            log.warning("no_fitted_policy", model_set=m.model_set_id, served="bands",
                        fix="retrain the set to serve the cost-aware policy")  # fmt: skip
        edge = m.edge if signals.policy == "cost_aware" else None
        if edge is not None and edge.horizon in m.horizons:
            cols = [m.horizons.index(edge.horizon)]
            if (edge.long_edge or edge.short_edge) and edge.stop_sigma > 0:
                scale = math.sqrt(edge.horizon / m.interval_minutes)
                risk = msgspec.structs.replace(
                    risk, stop_atr=edge.stop_sigma * scale, take_profit_atr=edge.target_sigma * scale
                )
        else:
            cols = [k for k, h in enumerate(m.horizons) if h in signals.decision_horizons]
        if not cols:
            raise ConfigError(
                f"signals.decision_horizons {list(signals.decision_horizons)} are not horizons of "
                f"model set {m.model_set_id} ({list(m.horizons)})"
            )
        hold = max(m.horizons[k] for k in cols)
        return cls(signals, risk, len(m.horizons), np.array(cols, dtype=np.int64), cals, edge, hold)

    def __call__(
        self,
        probs: dict[str, np.ndarray],
        ready: np.ndarray,
        dead: np.ndarray,
        close: np.ndarray,
        atr: np.ndarray,
        recent_notional: np.ndarray,
        liquidity: np.ndarray,
    ) -> tuple[np.ndarray, Decision, RiskPlan, dict[str, np.ndarray]]:
        """``probs``: each model's ``p_up`` [rows, H] → (ensemble ``p_up`` per horizon, the decision, the
        risk plan, each model's calibrated ``p_up``: the ensemble's members, scored on their own)."""
        n = len(close)
        probs = {name: calibrate_columns(self.calibrations.get(name, ()), p) for name, p in probs.items()}
        horizon_p = ensemble(probs, self.signals.weights) if probs else np.full((n, self.n_horizons), np.nan)
        p = decision_p(horizon_p, self.decision_cols)
        decision = decide(p, ready, dead, self.signals)
        if self.edge is not None:
            apply_edge(decision, self.edge, self.signals.sides == "long")
        risk = size_positions(decision.side, p, close, atr, recent_notional, liquidity, self.risk)
        hold_unsized(decision, risk.notional)
        return horizon_p, decision, risk, probs
