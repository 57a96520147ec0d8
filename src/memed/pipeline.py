"""The decision path, shared by the daemon and the backtester: one synchronous object, no asyncio.

For one event-time minute's batch of bars: features (streaming driver) → every served model in one
batched ONNX Runtime call (LSTM state per token kept between calls) → weighted ensemble per horizon →
policy → ATR risk. Time is the bars' event time; the wall clock never enters.

Per-token state besides the features: the LSTM's (h, c), the transformer's window of feature vectors,
the last close and when it last changed (dead detection), and a 30-bar EWMA of traded notional (volume
cap). A token's model state restarts whenever it is not ready (a new token, or a long gap that restarted
its features), exactly as the trainers cut sequences into runs. All of it is in :meth:`snapshot`.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import polars as pl

from memed.config import MemedConfig
from memed.errors import ConfigError, SnapshotError, SpecMismatchError
from memed.features import FeatureSpec, FeatureStream, build_spec
from memed.features.kernel import STATUS_STALE
from memed.history import BLOCK_ROWS, HistoryResult, process_history
from memed.models.registry import ModelSet
from memed.signals.ensemble import ensemble
from memed.signals.policy import A_HOLD, ACTIONS, R_NO_VOL, REASONS, Decision, decide, decision_p
from memed.signals.risk import NOTIONAL_ALPHA, RiskPlan, size_positions
from memed.signals.schema import Risk, Signal, idempotency_key

_GROW = 1024
_MAGIC = b"MEMEDPL1"


def _nan_to_none(a: np.ndarray) -> list[Any]:
    obj = a.astype(object)
    obj[np.isnan(a)] = None
    out: list[Any] = obj.tolist()
    return out


@dataclass
class MinuteResult:
    """Decisions for one minute's batch (arrays aligned with ``tokens``; stale bars are left out)."""

    ts_minutes: float
    tokens: list[str]
    action: np.ndarray
    reason: np.ndarray
    p: np.ndarray
    strength: np.ndarray
    horizon_p: np.ndarray  # [N, H] ensemble per horizon
    risk: RiskPlan
    model_set: str
    feature_spec: str
    horizons: tuple[int, ...]
    close: np.ndarray
    atr: np.ndarray  # ATR(14) in price units (NaN while warming up)
    recent_notional: np.ndarray  # 30-bar EWMA of close x volume
    stale: int = 0
    restarts: int = 0

    def signals(self) -> list[Signal]:
        ts = datetime.fromtimestamp(self.ts_minutes * 60.0, UTC).isoformat().replace("+00:00", "Z")
        out = []
        r = self.risk
        names = [str(h) for h in self.horizons]
        hp = _nan_to_none(self.horizon_p)
        p_list = _nan_to_none(self.p)
        strength = self.strength.tolist()
        actions = [ACTIONS[a] for a in self.action.tolist()]
        reasons = [REASONS[x] for x in self.reason.tolist()]
        has_risk = np.isfinite(r.notional).tolist()
        plan = np.column_stack(
            [r.entry, r.stop_loss, r.take_profit, r.units, r.notional, r.risk_reward]
        ).tolist()
        for i, token in enumerate(self.tokens):
            risk = None
            if has_risk[i]:
                e, sl, tp, units, notional, rr = plan[i]
                risk = Risk(entry=e, stop_loss=sl, take_profit=tp, position_size=units, notional=notional,
                            risk_reward=rr, capped_by=r.cap_name(i))  # fmt: skip
            out.append(
                Signal(
                    key=idempotency_key(token, ts, self.model_set),
                    token=token,
                    ts=ts,
                    action=actions[i],
                    strength=strength[i],
                    p_up=p_list[i],
                    horizons=dict(zip(names, hp[i], strict=True)),
                    reason=reasons[i],
                    risk=risk,
                    model_set=self.model_set,
                    feature_spec=self.feature_spec,
                )
            )
        return out


class DecisionPath:
    def __init__(self, model_set: ModelSet, cfg: MemedConfig, stream: FeatureStream | None = None) -> None:
        m = model_set.manifest
        self.cfg = cfg
        self.spec: FeatureSpec = build_spec(m.interval_minutes, m.gap_fill_max_minutes)
        if self.spec.hash != m.feature_spec_hash:
            raise SpecMismatchError(
                f"model set {m.model_set_id} was trained on feature spec {m.feature_spec_hash}; "
                f"this engine computes {self.spec.hash}"
            )
        self.stream = stream or FeatureStream(self.spec)
        self.timings = {"features": 0.0, "inference": 0.0, "decision": 0.0, "features_wait": 0.0}
        """Seconds spent per stage since creation (the benchmark reports them)."""
        self.atr_column = self.spec.names.index("atr_14") if "atr_14" in self.spec.names else -1
        self._index: dict[str, int] = {}
        self._free: list[int] = []
        self._cap = 0
        self._alloc(_GROW)
        self._install(model_set)

    # ------------------------------------------------------------------ models
    def _install(self, model_set: ModelSet) -> None:
        m = model_set.manifest
        served = {n: r for n, r in model_set.runners.items() if n in self.cfg.signals.models}
        if not served:
            raise ConfigError(
                f"signals.models {list(self.cfg.signals.models)} names no model of set {m.model_set_id} "
                f"(it has {sorted(model_set.runners)})"
            )
        cols = [k for k, h in enumerate(m.horizons) if h in self.cfg.signals.decision_horizons]
        if not cols:
            raise ConfigError(
                f"signals.decision_horizons {list(self.cfg.signals.decision_horizons)} are not horizons of "
                f"model set {m.model_set_id} ({list(m.horizons)})"
            )
        self.model_set = model_set
        self.runners = served
        self._decision_cols = np.array(cols, dtype=np.int64)
        self._lstm = next((r for r in served.values() if r.entry.kind == "stateful"), None)
        self._window = next((r for r in served.values() if r.entry.kind == "window"), None)
        self._h = self._c = np.zeros((0, 0, 0), dtype=np.float32)
        if self._lstm is not None:
            layers, hidden = self._lstm.entry.state_shape
            self._h = np.zeros((layers, self._cap, hidden), dtype=np.float32)
            self._c = np.zeros_like(self._h)
        self._win = np.zeros((0, 0, 0))
        if self._window is not None:
            self._win = np.zeros((self._cap, self._window.entry.window, len(self.spec.names)))
        self._wcount = np.zeros(self._cap, dtype=np.int64)

    def swap_models(self, model_set: ModelSet) -> None:
        """Serve another model set of the same feature spec. Sequence-model state starts afresh (another
        net's hidden state means nothing to this one); features continue untouched."""
        if model_set.manifest.feature_spec_hash != self.spec.hash:
            raise SpecMismatchError(
                f"model set {model_set.id} has feature spec {model_set.manifest.feature_spec_hash}, "
                f"the running engine {self.spec.hash}"
            )
        self._install(model_set)

    # ------------------------------------------------------------------ token rows
    def _alloc(self, extra: int) -> None:
        old = self._cap
        self._cap = old + extra
        self._last_close = np.resize(getattr(self, "_last_close", np.empty(0)), self._cap)
        self._last_change = np.resize(getattr(self, "_last_change", np.empty(0)), self._cap)
        self._notional = np.resize(getattr(self, "_notional", np.empty(0)), self._cap)
        self._free.extend(range(self._cap - 1, old - 1, -1))
        if old and self._lstm is not None:
            pad = np.zeros((self._h.shape[0], extra, self._h.shape[2]), dtype=np.float32)
            self._h = np.concatenate([self._h, pad], axis=1)
            self._c = np.concatenate([self._c, pad.copy()], axis=1)
        if old and self._window is not None:
            self._win = np.concatenate([self._win, np.zeros((extra, *self._win.shape[1:]))])
        if old:
            self._wcount = np.concatenate([self._wcount, np.zeros(extra, dtype=np.int64)])

    def _rows(self, tokens: list[str], close: np.ndarray, ts: float) -> np.ndarray:
        rows = np.empty(len(tokens), dtype=np.int64)
        for i, t in enumerate(tokens):
            r = self._index.get(t)
            if r is None:
                if not self._free:
                    self._alloc(max(_GROW, self._cap))
                r = self._free.pop()
                self._index[t] = r
                self._last_close[r] = close[i]
                self._last_change[r] = ts
                self._notional[r] = np.nan
                self._reset_models(np.array([r]))
            rows[i] = r
        return rows

    def _reset_models(self, rows: np.ndarray) -> None:
        if self._lstm is not None:
            self._h[:, rows] = 0.0
            self._c[:, rows] = 0.0
        self._wcount[rows] = 0

    @property
    def tokens(self) -> int:
        return len(self._index)

    def evict_idle(self, now_minutes: float, ttl_minutes: float) -> list[str]:
        gone = self.stream.evict_idle(now_minutes, ttl_minutes)
        for t in gone:
            r = self._index.pop(t, None)
            if r is not None:
                self._free.append(r)
        return gone

    # ------------------------------------------------------------------ the minute
    def process(self, tokens: list[str], ts_minutes: float, bars: np.ndarray) -> MinuteResult:
        """One event-time minute: ``tokens`` (distinct), ``bars`` (9, n) float64 as
        :meth:`FeatureStream.update_arrays` takes them."""
        n = len(tokens)
        t0 = time.perf_counter()
        upd = self.stream.update_arrays(tokens, np.full(n, ts_minutes), bars)
        t1 = time.perf_counter()
        fresh = upd.status != STATUS_STALE
        stale = int(n - fresh.sum())
        if stale:
            tokens = [t for t, f in zip(tokens, fresh.tolist(), strict=True) if f]
            bars = bars[:, fresh]
            values, ready = upd.values[fresh], upd.ready[fresh]
        else:
            values, ready = upd.values, upd.ready
        close, volume, liquidity = bars[3], bars[4], bars[5]
        rows = self._rows(tokens, close, ts_minutes)
        changed = close != self._last_close[rows]
        self._last_change[rows[changed]] = ts_minutes
        self._last_close[rows] = close
        dead = ts_minutes - self._last_change[rows] >= self.cfg.signals.dead_minutes
        traded = close * volume
        prev = self._notional[rows]
        self._notional[rows] = np.where(np.isnan(prev), traded, prev + NOTIONAL_ALPHA * (traded - prev))
        self._reset_models(rows[~ready])
        t2 = time.perf_counter()
        probs = self._score(values, ready, rows)
        t3 = time.perf_counter()
        atr = values[:, self.atr_column] if self.atr_column >= 0 else np.full(len(tokens), np.nan)
        notional = self._notional[rows]
        horizon_p, decision, risk = self.decide(probs, ready, dead, close, atr, notional, liquidity)
        self.add_timings(t0, t1, t2, t3, time.perf_counter())
        return MinuteResult(
            ts_minutes=ts_minutes,
            tokens=list(tokens),
            action=decision.action,
            reason=decision.reason,
            p=decision.p,
            strength=decision.strength,
            horizon_p=horizon_p,
            risk=risk,
            model_set=self.model_set.id,
            feature_spec=self.spec.hash,
            horizons=self.model_set.manifest.horizons,
            close=close,
            atr=atr,
            recent_notional=self._notional[rows],
            stale=stale,
            restarts=upd.restarts,
        )

    def add_timings(self, t0: float, t1: float, t2: float, t3: float, t4: float) -> None:
        """Account one minute-loop pass (every stage in this thread, so the features are all waited for):
        features [t0, t1), books [t1, t2), inference [t2, t3), decisions [t3, t4)."""
        self.timings["features"] += t1 - t0
        self.timings["features_wait"] += t1 - t0
        self.timings["inference"] += t3 - t2
        self.timings["decision"] += (t2 - t1) + (t4 - t3)

    def decide(
        self,
        probs: dict[str, np.ndarray],
        ready: np.ndarray,
        dead: np.ndarray,
        close: np.ndarray,
        atr: np.ndarray,
        recent_notional: np.ndarray,
        liquidity: np.ndarray,
    ) -> tuple[np.ndarray, Decision, RiskPlan]:
        """Models' probabilities → ensemble per horizon → policy → risk, row by row (any rows: one
        minute's tokens in the daemon, a whole history in the backtest). Every operation is elementwise
        per row, so a row's decision does not depend on which rows it is computed with."""
        n = len(close)
        n_h = len(self.model_set.manifest.horizons)
        horizon_p = ensemble(probs, self.cfg.signals.weights) if probs else np.full((n, n_h), np.nan)
        p = decision_p(horizon_p, self._decision_cols)
        decision = decide(p, ready, dead, self.cfg.signals)
        risk = size_positions(decision.action, p, close, atr, recent_notional, liquidity, self.cfg.risk)
        no_vol = (decision.action != A_HOLD) & ~np.isfinite(risk.notional)
        decision.action[no_vol] = A_HOLD
        decision.reason[no_vol] = R_NO_VOL
        decision.strength[no_vol] = 0.0
        decision.p[no_vol] = np.nan
        return horizon_p, decision, risk

    def process_history(
        self, bars: pl.DataFrame, *, block_rows: int = BLOCK_ROWS, overlap: bool = True
    ) -> HistoryResult:
        """Every bar of ``bars`` (canonical frame) decided at once: exactly the decisions :meth:`process`
        makes feeding the same bars minute by minute into a fresh path, computed in bulk (blocks of
        ``block_rows`` rows: batch features, large ONNX Runtime calls, the LSTM's whole-sequence graph;
        with ``overlap`` the next block's features are computed while this one is scored). The
        backtester's replay. This path's own streaming state is neither used nor changed."""
        return process_history(self, bars, block_rows=block_rows, overlap=overlap)

    def _score(self, values: np.ndarray, ready: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        n = len(values)
        n_h = len(self.model_set.manifest.horizons)
        sel = np.flatnonzero(ready)
        x = np.ascontiguousarray(values[sel])
        r_sel = rows[sel]
        out: dict[str, np.ndarray] = {}
        for name, runner in self.runners.items():
            p = np.full((n, n_h), np.nan)
            if len(sel):
                kind = runner.entry.kind
                if kind == "tabular":
                    p[sel] = runner.predict(x)
                elif kind == "stateful":
                    pv, h2, c2 = runner.step(x, self._h[:, r_sel], self._c[:, r_sel])
                    self._h[:, r_sel], self._c[:, r_sel] = h2, c2
                    p[sel] = pv
                else:
                    p[sel] = self._score_window(runner, x, r_sel)
            out[name] = p
        return out

    def _score_window(self, runner: object, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        assert self._window is not None
        w = self._window.entry.window
        self._win[rows, :-1] = self._win[rows, 1:]
        self._win[rows, -1] = x
        self._wcount[rows] += 1
        full = self._wcount[rows] >= w
        p = np.full((len(rows), len(self.model_set.manifest.horizons)), np.nan)
        if full.any():
            p[full] = self._window.predict_window(np.ascontiguousarray(self._win[rows[full]]))
        return p

    # ------------------------------------------------------------------ checkpoints
    def snapshot(self) -> bytes:
        tokens = list(self._index)
        rows = np.array([self._index[t] for t in tokens], dtype=np.int64)
        doc = {
            "model_set": self.model_set.id,
            "spec": self.spec.hash,
            "tokens": tokens,
            "stream": self.stream.snapshot(),
            "last_close": self._last_close[rows].tobytes(),
            "last_change": self._last_change[rows].tobytes(),
            "notional": self._notional[rows].tobytes(),
            "wcount": self._wcount[rows].tobytes(),
            "h": np.ascontiguousarray(self._h[:, rows]).tobytes() if self._lstm is not None else b"",
            "c": np.ascontiguousarray(self._c[:, rows]).tobytes() if self._lstm is not None else b"",
            "win": np.ascontiguousarray(self._win[rows]).tobytes() if self._window is not None else b"",
        }
        body = msgspec.msgpack.encode(doc)
        return _MAGIC + struct.pack("<Q", len(body)) + body

    @classmethod
    def restore(cls, model_set: ModelSet, cfg: MemedConfig, blob: bytes) -> DecisionPath:
        """Rebuild from :meth:`snapshot`. Sequence-model state is kept only for the same model set."""
        try:
            if blob[:8] != _MAGIC:
                raise SnapshotError("not a memed decision-path checkpoint")
            (size,) = struct.unpack("<Q", blob[8:16])
            if len(blob) != 16 + size:
                raise SnapshotError("checkpoint is truncated")
            doc = msgspec.msgpack.decode(blob[16:])
        except (struct.error, msgspec.DecodeError) as exc:
            raise SnapshotError(f"corrupt checkpoint: {exc}") from None
        path = cls(model_set, cfg, stream=None)
        if doc["spec"] != path.spec.hash:
            raise SpecMismatchError(f"checkpoint has feature spec {doc['spec']}, running {path.spec.hash}")
        path.stream = FeatureStream.restore(path.spec, doc["stream"])
        tokens: list[str] = doc["tokens"]
        path._rows(tokens, np.zeros(len(tokens)), 0.0)
        rows = np.array([path._index[t] for t in tokens], dtype=np.int64)
        path._last_close[rows] = np.frombuffer(doc["last_close"])
        path._last_change[rows] = np.frombuffer(doc["last_change"])
        path._notional[rows] = np.frombuffer(doc["notional"])
        if doc["model_set"] == model_set.id:
            path._wcount[rows] = np.frombuffer(doc["wcount"], dtype=np.int64)
            if path._lstm is not None and doc["h"]:
                shape = (path._h.shape[0], len(tokens), path._h.shape[2])
                path._h[:, rows] = np.frombuffer(doc["h"], dtype=np.float32).reshape(shape)
                path._c[:, rows] = np.frombuffer(doc["c"], dtype=np.float32).reshape(shape)
            if path._window is not None and doc["win"]:
                path._win[rows] = np.frombuffer(doc["win"]).reshape(len(tokens), *path._win.shape[1:])
        return path
