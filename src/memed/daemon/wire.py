"""Decisions to wire signals (:class:`~memed.signals.frame.SignalFrame`, versioned JSON): built at the
edge, where they leave the process, never inside the decision path."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from memed.decision.result import Decisions
from memed.signals.frame import SignalFrame, frame_schema
from memed.signals.policy import ACTIONS, REASONS, SIDES
from memed.signals.risk import CAPS, RiskPlan
from memed.signals.schema import SIGNAL_VERSION, Signal, idempotency_keys

_ACTIONS, _REASONS, _SIDES, _CAPS = (pl.Series(v, dtype=pl.String) for v in (ACTIONS, REASONS, SIDES, CAPS))


def iso_minute(ts_minutes: float) -> str:
    """A bar's event time as the signal's ``ts``: ISO 8601, UTC, ``Z``."""
    return datetime.fromtimestamp(ts_minutes * 60.0, UTC).isoformat().replace("+00:00", "Z")


def signal_frame(d: Decisions, keys: list[str] | None = None) -> SignalFrame:
    """One signal per row of ``d``, in its order, as columns (no Python object per row: this runs for
    every token every minute). ``keys``: the rows' idempotency keys when the caller has them already
    (:class:`KeyCache`)."""
    if not len(d):
        return SignalFrame(pl.DataFrame(schema=frame_schema([str(h) for h in d.horizons])))
    minutes = np.unique(d.ts_minutes)
    if len(minutes) == 1:  # a minute of the daemon
        ts = pl.repeat(iso_minute(float(minutes[0])), len(d), dtype=pl.String, eager=True).alias("ts")
    else:
        stamps = {m: iso_minute(m) for m in minutes.tolist()}
        ts = pl.Series("ts", [stamps[m] for m in d.ts_minutes.tolist()], dtype=pl.String)
    if keys is None:
        keys = idempotency_keys(d.tokens.to_list(), ts.to_list(), d.model_set)
    risk = d.risk
    cols = {
        "key": pl.Series(keys, dtype=pl.String),
        "token": d.tokens.cast(pl.String),
        "ts": ts,
        "action": _ACTIONS.gather(d.action),
        "strength": d.strength,
        "p_up": d.p,
        **{f"h{h}": d.horizon_p[:, j] for j, h in enumerate(d.horizons)},
        "reason": _REASONS.gather(d.reason),
        "side": _SIDES.gather(d.side),
        "entry": risk.entry,
        "stop_loss": risk.stop_loss,
        "take_profit": risk.take_profit,
        "position_size": risk.units,
        "notional": risk.notional,
        "risk_reward": risk.risk_reward,
        "capped_by": _CAPS.gather(risk.cap),
    }
    plan = ("entry", "stop_loss", "take_profit", "position_size", "notional", "risk_reward")
    frame = pl.DataFrame(cols).select(
        pl.lit(SIGNAL_VERSION, pl.Int64).alias("version"),
        "key",
        "token",
        "ts",
        "action",
        "strength",
        pl.col("p_up").fill_nan(None),
        pl.struct(pl.col(f"h{h}").fill_nan(None).alias(str(h)) for h in d.horizons).alias("horizons"),
        "reason",
        "side",
        pl.when(pl.col("notional").is_finite())
        .then(pl.struct(*plan, "capped_by", pl.lit(d.hold_minutes, pl.Int64).alias("hold_minutes")))
        .alias("risk"),
        pl.lit(d.model_set, pl.String).alias("model_set"),
        pl.lit(d.feature_spec, pl.String).alias("feature_spec"),
    )
    return SignalFrame(frame)


class KeyCache:
    """The idempotency keys of a minute's signals, hashed ahead: after minute ``m`` is sent, the keys of
    its tokens at the next bar are hashed (9 ms at 10,000 tokens), so that the next minute finds them ready
    instead of hashing them between its last tick and its signals. A token or minute not prepared is
    hashed when asked for."""

    def __init__(self) -> None:
        self._at: tuple[int, str] | None = None
        self._keys: dict[str, str] = {}

    def prepare(self, tokens: list[str], minute: int, model_set: str) -> None:
        self._keys = dict(zip(tokens, idempotency_keys(tokens, [iso_minute(minute)] * len(tokens), model_set),
                              strict=True))  # fmt: skip
        self._at = (minute, model_set)

    def keys(self, tokens: list[str], minute: int, model_set: str) -> list[str]:
        """Each token's key at ``minute`` (``ts`` = :func:`iso_minute`), in order."""
        ready = self._keys if self._at == (minute, model_set) else {}
        out = [ready.get(t, "") for t in tokens]
        missing = [i for i, k in enumerate(out) if not k]
        if missing:
            stamp = iso_minute(minute)
            fresh = idempotency_keys([tokens[i] for i in missing], [stamp] * len(missing), model_set)
            for i, k in zip(missing, fresh, strict=True):
                out[i] = k
        return out


def warm_up(horizons: tuple[int, ...]) -> None:
    """Run every encoder once on two made-up rows (one trade, one HOLD without a p): polars sets itself up
    on first use (~45 ms at 10,000 tokens), which would otherwise fall on the daemon's first minute."""
    two, nan = np.ones(2), np.array([1.0, np.nan])
    codes = np.zeros(2, np.int8)
    risk = RiskPlan(nan, nan, nan, nan, nan, nan, codes)
    d = Decisions(tokens=pl.Series("token", ["A", "B"]), ts_minutes=np.zeros(2), action=codes, reason=codes,
                  p=nan, strength=two, side=codes, horizon_p=np.full((2, len(horizons)), np.nan), risk=risk,
                  close=two, atr=two, recent_notional=two, horizons=horizons, model_set="",
                  feature_spec="")  # fmt: skip
    frame = signal_frame(d)
    frame.json(), frame.ndjson(), frame.arrow(), frame.signals()


def to_signals(d: Decisions) -> list[Signal]:
    """One :class:`Signal` per row of ``d``, in its order."""
    return signal_frame(d).signals()
