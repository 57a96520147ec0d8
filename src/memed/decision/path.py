"""The decision path, shared by the daemon and the backtester: one synchronous object, no asyncio.

For one event-time minute's batch of bars (:meth:`DecisionPath.process`, the minute driver): features
(the streaming driver) → the per-token books → every served model through its scorer (state per token
kept between calls) → :class:`~memed.decision.decide.Decider`: weighted ensemble per horizon, policy, ATR
risk. :meth:`DecisionPath.process_history` decides a whole history at once with the same steps (the
history driver, :mod:`memed.decision.history`). Time is the bars' event time; the wall clock never enters.

Per-token state lives in the rows of one :class:`~memed.features.tokens.TokenTable`, shared with the
feature stream: the features, the books (last close and when it last changed, for dead detection; the
traded-notional EWMA, for the volume cap) and each scorer's model state. A token's model state restarts
whenever it is not ready (a new token, or a long gap that restarted its features), exactly as the
trainers cut sequences into runs. All of it is in :meth:`DecisionPath.snapshot`.
"""

from __future__ import annotations

import struct
import time
from typing import Literal

import msgspec
import numpy as np
import polars as pl

from memed.config import RiskConfig, SignalsConfig
from memed.data.bars import CLOSE, LIQUIDITY, VOLUME
from memed.data.frames import bar_matrix, epoch_minutes, run_bounds
from memed.decision.books import Books
from memed.decision.decide import Decider
from memed.decision.history import BLOCK_ROWS, HistoryRun, decide_history
from memed.decision.online import NAME as ONLINE
from memed.decision.online import OnlineMember
from memed.decision.result import Decisions
from memed.decision.scorers import Scorer
from memed.errors import ConfigError, SnapshotError, SpecMismatchError
from memed.features import FeatureSpec, FeatureStream, build_spec
from memed.features.kernel import STATUS_STALE
from memed.features.spec import ATR_FEATURE
from memed.models.families import family, load_part
from memed.models.registry import ModelSet

_MAGIC = b"MEMEDPL1"


def scorers_for(model_set: ModelSet, names: tuple[str, ...]) -> list[Scorer]:
    """A fresh scorer (its family's) for each model of ``model_set`` that ``names`` lists."""
    served = [n for n in model_set.runners if n in names]
    if not served:
        raise ConfigError(
            f"signals.models {list(names)} names no model of set {model_set.id} "
            f"(it has {sorted(model_set.runners)})"
        )
    n_features = len(model_set.manifest.feature_names)
    return [load_part(family(n).scorer)(model_set.runners[n], n_features) for n in served]


def member_names(model_set: ModelSet, signals: SignalsConfig) -> tuple[str, ...]:
    """The ensemble's members a path serving ``model_set`` has, sorted: the families ``signals.models``
    names that the set has, and the online learner when it is on."""
    fitted = [n for n in model_set.runners if n in signals.models]
    return tuple(sorted([*fitted, ONLINE] if signals.online.enabled else fitted))


class DecisionPath:
    def __init__(self, model_set: ModelSet, signals: SignalsConfig, risk: RiskConfig) -> None:
        m = model_set.manifest
        self.signals = signals
        self.risk = risk
        self.spec: FeatureSpec = build_spec(m.interval_minutes, m.gap_fill_max_minutes, m.market_context)
        if self.spec.hash != m.feature_spec_hash:
            raise SpecMismatchError(
                f"model set {m.model_set_id} was trained on feature spec {m.feature_spec_hash}; "
                f"this engine computes {self.spec.hash}"
            )
        self.stream = FeatureStream(self.spec)
        self.books = Books(signals.dead_minutes)
        self.timings = {"features": 0.0, "inference": 0.0, "decision": 0.0, "features_wait": 0.0}
        """Seconds spent per stage since creation (the benchmark reports them)."""
        self.atr_column = self.spec.names.index(ATR_FEATURE) if ATR_FEATURE in self.spec.names else -1
        """The ATR-per-close feature; risk sizing takes it times the close (ATR in price units)."""
        self.online: OnlineMember | None = None
        """The online learner (``signals.online``), a member that learns from the delayed labels."""
        self._install(model_set)

    # ------------------------------------------------------------------ models
    def _install(self, model_set: ModelSet) -> None:
        m = model_set.manifest
        self.decide = Decider.for_manifest(m, self.signals, self.risk)
        self.scorers = scorers_for(model_set, self.signals.models)
        self.model_set = model_set
        on = self.signals.online
        if on.enabled and (self.online is None or self.online.horizons != m.horizons):
            ties: Literal["exclude", "down"] = "down" if m.ties == "down" else "exclude"
            self.online = OnlineMember(on, m.horizons, m.feature_names, m.interval_minutes, ties)

    def swap_models(self, model_set: ModelSet) -> None:
        """Serve another model set of the same feature spec. Sequence-model state starts afresh (another
        net's hidden state means nothing to this one); features and books continue untouched."""
        if model_set.manifest.feature_spec_hash != self.spec.hash:
            raise SpecMismatchError(
                f"model set {model_set.id} has feature spec {model_set.manifest.feature_spec_hash}, "
                f"the running engine {self.spec.hash}"
            )
        self._install(model_set)

    # ------------------------------------------------------------------ tokens
    @property
    def tokens(self) -> int:
        return len(self.stream.table)

    def evict_idle(self, now_minutes: float, ttl_minutes: float) -> list[str]:
        """Forget tokens idle for ``ttl_minutes`` (their rows are reused, and reset, for new tokens)."""
        gone = self.stream.evict_idle(now_minutes, ttl_minutes)
        if self.online is not None:
            self.online.forget(gone)
        return gone

    def warm_up(self) -> None:
        """Run one made-up minute through a scratch copy of this path (compiled kernels loaded, every
        ONNX session run once), so the first real minute is not slow; this path's state is untouched."""
        scratch = DecisionPath(self.model_set, self.signals, self.risk)
        rng = np.random.default_rng(0)
        close = np.exp(np.cumsum(rng.normal(0.0, 0.01, self.spec.warmup_bars + 2)))
        for minute, c in enumerate(close.tolist()):  # past the warm-up, so that every model scores
            bars = np.array(
                [[c], [c * 1.001], [c * 0.999], [c], [1.0], [np.nan], [np.nan], [np.nan], [np.nan]]
            )
            scratch.process(["__warm_up__"], float(minute), bars)

    def last_minutes(self, tokens: list[str]) -> np.ndarray:
        """Each token's last bar (epoch minutes; NaN for a token without state)."""
        return self.stream.last_minutes(tokens)

    def forget(self, tokens: list[str]) -> list[str]:
        """Forget these tokens' state (features, books, model states are reset when a row is reused)."""
        if self.online is not None:
            self.online.forget(tokens)
        return self.stream.forget(tokens)

    def _fit(self) -> None:
        capacity = self.stream.table.capacity
        self.books.fit(capacity)
        for s in self.scorers:
            s.fit(capacity)

    # ------------------------------------------------------------------ the minute driver
    def process(self, tokens: list[str], ts_minutes: float, bars: np.ndarray) -> Decisions:
        """One event-time minute: ``tokens`` (distinct) and their ``bars``, a (9, n) float64 matrix in
        :data:`~memed.data.bars.BAR_FIELDS` order (as :meth:`FeatureStream.update_arrays` takes it)."""
        n = len(tokens)
        t0 = time.perf_counter()
        upd = self.stream.update_arrays(tokens, np.full(n, ts_minutes), bars)
        t1 = time.perf_counter()
        self._fit()
        if upd.new.any():
            new = upd.rows[upd.new]
            self.books.reset(new)
            for s in self.scorers:
                s.reset(new)
        fresh = upd.status != STATUS_STALE
        stale = int(n - fresh.sum())
        rows, values, ready = upd.rows, upd.values, upd.ready
        if stale:
            tokens = [t for t, f in zip(tokens, fresh.tolist(), strict=True) if f]
            bars, rows, values, ready = bars[:, fresh], rows[fresh], values[fresh], ready[fresh]
        close, volume, liquidity = bars[CLOSE], bars[VOLUME], bars[LIQUIDITY]
        dead, notional = self.books.step(rows, ts_minutes, close, volume)
        unready = rows[~ready]
        for s in self.scorers:
            s.reset(unready)
        t2 = time.perf_counter()
        probs = self._score(values, ready, rows)
        if self.online is not None:
            probs[ONLINE] = self.online.step(tokens, int(ts_minutes), close, values, ready)
        t3 = time.perf_counter()
        atr = values[:, self.atr_column] * close if self.atr_column >= 0 else np.full(len(tokens), np.nan)
        horizon_p, decision, risk, members = self.decide(probs, ready, dead, close, atr, notional, liquidity)
        self._add_timings(t0, t1, t2, t3, time.perf_counter())
        return Decisions(
            tokens=pl.Series("token", tokens, dtype=pl.String),
            ts_minutes=np.full(len(tokens), ts_minutes),
            action=decision.action,
            reason=decision.reason,
            p=decision.p,
            strength=decision.strength,
            side=decision.side,
            horizon_p=horizon_p,
            risk=risk,
            close=close,
            atr=atr,
            recent_notional=notional,
            horizons=self.model_set.manifest.horizons,
            model_set=self.model_set.id,
            feature_spec=self.spec.hash,
            hold_minutes=self.decide.hold_minutes,
            stale=stale,
            restarts=upd.restarts,
            features=values,
            ready=ready,
            members=members,
        )

    def _score(self, values: np.ndarray, ready: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Each scorer's ``p_up`` [n, H] for the minute's tokens, NaN where not ready."""
        sel = np.flatnonzero(ready)
        x = np.ascontiguousarray(values[sel])
        out: dict[str, np.ndarray] = {}
        for s in self.scorers:
            p = np.full((len(values), s.n_h), np.nan)
            if len(sel):
                p[sel] = s.step(x, rows[sel])
            out[s.name] = p
        return out

    def _add_timings(self, t0: float, t1: float, t2: float, t3: float, t4: float) -> None:
        """Account one minute (every stage in this thread, so the features are all waited for): features
        [t0, t1), books [t1, t2), inference [t2, t3), decisions [t3, t4)."""
        self.timings["features"] += t1 - t0
        self.timings["features_wait"] += t1 - t0
        self.timings["inference"] += t3 - t2
        self.timings["decision"] += (t2 - t1) + (t4 - t3)

    # ------------------------------------------------------------------ the history driver
    def process_history(
        self, bars: pl.DataFrame, *, block_rows: int = BLOCK_ROWS, overlap: bool = True
    ) -> Decisions:
        """Every bar of ``bars`` (canonical frame) decided at once: exactly the decisions :meth:`process`
        makes feeding the same bars minute by minute into a fresh path, computed in bulk (blocks of
        ``block_rows`` rows: batch features, large ONNX Runtime calls, the LSTM's whole-sequence graph;
        with ``overlap`` the next block's features are computed while this one is scored). The
        backtester's replay. This path's own streaming state is neither used nor changed. With the online
        learner, whose every vote depends on all tokens' earlier labels, a fresh path decides the bars
        minute by minute instead (the same results, at the minute driver's speed)."""
        if self.online is not None:
            return _minute_by_minute(DecisionPath(self.model_set, self.signals, self.risk), bars)
        run = HistoryRun(
            spec=self.spec,
            scorers=scorers_for(self.model_set, self.signals.models),
            decide=self.decide,
            dead_minutes=float(self.signals.dead_minutes),
            atr_column=self.atr_column,
            horizons=self.model_set.manifest.horizons,
            model_set=self.model_set.id,
            timings=self.timings,
        )
        return decide_history(run, bars, block_rows, overlap)

    # ------------------------------------------------------------------ checkpoints
    def snapshot(self) -> bytes:
        tokens = self.stream.tokens
        rows = self.stream.table.rows(tokens)
        doc = {
            "model_set": self.model_set.id,
            "spec": self.spec.hash,
            "tokens": tokens,
            "stream": self.stream.snapshot(),
            **self.books.snapshot(rows),
            "models": {s.name: s.snapshot(rows) for s in self.scorers},
            "online": self.online.snapshot() if self.online is not None else None,
        }
        body = msgspec.msgpack.encode(doc)
        return _MAGIC + struct.pack("<Q", len(body)) + body

    @classmethod
    def restore(cls, model_set: ModelSet, signals: SignalsConfig, risk: RiskConfig, blob: bytes
                ) -> DecisionPath:  # fmt: skip
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
        path = cls(model_set, signals, risk)
        if doc["spec"] != path.spec.hash:
            raise SpecMismatchError(f"checkpoint has feature spec {doc['spec']}, running {path.spec.hash}")
        path.stream = FeatureStream.restore(path.spec, doc["stream"])
        tokens: list[str] = doc["tokens"]
        rows = path.stream.table.rows(tokens)
        path._fit()
        path.books.restore(doc, rows)
        if doc["model_set"] == model_set.id:
            models = doc.get("models") or _legacy_models(doc, path.scorers)
            for s in path.scorers:
                if s.name in models:
                    s.restore(models[s.name], rows)
        if path.online is not None and doc.get("online"):  # it learns whichever set serves
            path.online.restore(doc["online"])
        return path


def _legacy_models(doc: dict[str, bytes], scorers: list[Scorer]) -> dict[str, dict[str, bytes]]:
    """Model state of a checkpoint written before scorers kept their own (one stateful and one window
    model at most, under fixed top-level keys)."""
    out = {}
    for s in scorers:
        keys = s.legacy_keys
        if keys and all(k in doc for k in keys):
            out[s.name] = {k: doc[k] for k in keys}
    return out


def _minute_by_minute(path: DecisionPath, bars: pl.DataFrame) -> Decisions:
    """Every bar of ``bars`` through :meth:`DecisionPath.process`, one event-time minute at a time; the
    decisions in the history driver's order (time, then token)."""
    frame = bars.sort("ts", "token", maintain_order=True)
    ts, x, tokens = epoch_minutes(frame["ts"]), bar_matrix(frame), frame["token"].to_list()
    bounds = run_bounds(ts)
    parts = [path.process(tokens[a:b], float(ts[a]), np.ascontiguousarray(x[:, a:b]))
             for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]  # fmt: skip
    return Decisions.concat(parts, path.model_set.manifest.horizons, path.model_set.id, path.spec.hash,
                            path.decide.hold_minutes)  # fmt: skip
