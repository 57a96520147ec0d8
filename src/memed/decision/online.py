"""The online learner (``[signals.online]``): an ensemble member, ``online``, that learns while it serves.

Per learned horizon ``h``, a river ``LogisticRegression`` (plain SGD, L2) on features standardised by a
river ``StandardScaler``, both fed the labels of minute ``t`` when minute ``t + h`` closes — the trainer's
label rule and ties, from the same per-token ring buffers the delayed-label scoring uses
(:class:`~memed.monitor.labels.DelayedLabels`, here holding the feature row of ``t``). Each minute the
member first learns from the labels the minute resolved (one mini-batch step per horizon, the rows in
token order), then votes on the minute's ready rows; it abstains (NaN) on a horizon until it has learned
from ``min_labels`` labels, and on the horizons it does not learn.

Everything it does is a function of the bars in event-time order, so the daemon and a replay of the same
bars learn the same steps from the same labels and serve the same probabilities bit for bit; the history
driver runs it minute by minute. Its state — the weights, the intercept, the optimiser's step count, the
scaler's counts, means and variances, and the pending labels — goes into the decision path's checkpoint
as plain numbers (msgpack; no pickle), and restores exactly.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from memed.config import OnlineConfig
from memed.errors import ConfigError
from memed.monitor.labels import DelayedLabels
from memed.monitor.sampling import Sample

NAME = "online"


def _river() -> Any:
    """river and pandas, imported when the learner is on (an optional extra)."""
    try:
        import pandas  # noqa: PLC0415
        import river.linear_model  # noqa: PLC0415
        import river.optim  # noqa: PLC0415
        import river.preprocessing  # noqa: PLC0415
        import river.utils  # noqa: PLC0415
    except ImportError:
        raise ConfigError("signals.online needs river: pip install 'memed[online]'") from None
    return river, pandas


class _Learner:
    """One horizon's scaler and logistic regression."""

    def __init__(self, cfg: OnlineConfig, columns: list[str]) -> None:
        river, self.pd = _river()
        linear_model, optim, preprocessing = river.linear_model, river.optim, river.preprocessing
        self.vector = river.utils.VectorDict
        self.columns = columns
        self.scaler = preprocessing.StandardScaler()
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(cfg.learning_rate), l2=cfg.l2)
        self.labels = 0

    def learn(self, x: np.ndarray, y: np.ndarray) -> None:
        frame = self.pd.DataFrame(np.nan_to_num(x), columns=self.columns)  # an absent optional feature: 0
        self.scaler.learn_many(frame)
        self.model.learn_many(self.scaler.transform_many(frame), self.pd.Series(y == 1.0))
        self.labels += len(y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        frame = self.pd.DataFrame(np.nan_to_num(x), columns=self.columns)
        proba = self.model.predict_proba_many(self.scaler.transform_many(frame))
        return proba[True].to_numpy(dtype=np.float64) if True in proba.columns else np.full(len(x), 0.5)

    def state(self) -> dict[str, Any]:
        sc, m = self.scaler, self.model
        return {
            "labels": self.labels,
            "counts": dict(sc.counts),
            "means": dict(sc.means),
            "vars": dict(sc.vars),
            "weights": dict(m._weights),  # river keeps its parameters here
            "intercept": float(m.intercept),
            "iterations": int(m.optimizer.n_iterations),
            "y_name": m._y_name,
        }

    def load(self, doc: dict[str, Any]) -> None:
        sc, m = self.scaler, self.model
        self.labels = int(doc["labels"])
        sc.counts.clear()
        sc.counts.update(doc["counts"])
        sc.means.clear()
        sc.means.update(doc["means"])
        sc.vars.clear()
        sc.vars.update(doc["vars"])
        m._weights = self.vector(doc["weights"])
        m.intercept = np.float64(doc["intercept"])
        m.optimizer.n_iterations = int(doc["iterations"])
        m._y_name = doc["y_name"]


class OnlineMember:
    def __init__(self, cfg: OnlineConfig, horizons: tuple[int, ...], feature_names: tuple[str, ...],
                 interval_minutes: int, ties: Literal["exclude", "down"]) -> None:  # fmt: skip
        self.cfg = cfg
        self.horizons = horizons
        self.cols = [k for k, h in enumerate(horizons) if h in cfg.horizons]
        """Columns of the set's horizons the member learns and votes on."""
        self.learned = tuple(horizons[k] for k in self.cols)
        self.n_features = len(feature_names)
        columns = list(feature_names)
        self.learners = [_Learner(cfg, columns) for _ in self.cols]
        self.pending = DelayedLabels(self.learned, interval_minutes, ties, members=self.n_features)
        self._learns = Sample(cfg.learn_share)

    def step(self, tokens: list[str], minute: int, close: np.ndarray, x: np.ndarray, ready: np.ndarray
             ) -> np.ndarray:  # fmt: skip
        """One minute's rows (the decision path's, stale ones left out): learn from the labels they
        resolve, then vote. ``x`` [n, F], ``ready`` [n] → ``p_up`` [n, H] (NaN: abstains)."""
        out = np.full((len(tokens), len(self.horizons)), np.nan)
        if not self.cols:
            return out
        # every bar of a learning token goes in (the labels' closes are its bars'), the ready ones as records
        keep = np.array([self._learns(t) for t in tokens], dtype=np.bool_)
        if keep.any():
            at = np.flatnonzero(keep)
            p = np.where(ready[at, None], 0.0, np.nan) * np.ones((1, len(self.cols)))  # NaN: no record
            rows = np.broadcast_to(x[at][:, None, :], (len(at), len(self.cols), self.n_features))
            resolved = self.pending.update([tokens[i] for i in at], minute, close[at], p,
                                           np.zeros(len(at), np.bool_), None, rows)  # fmt: skip
            for r in resolved:
                if len(r.y) and r.members is not None:
                    self.learners[self.learned.index(r.horizon)].learn(r.members, r.y)
        sel = np.flatnonzero(ready)
        if len(sel):
            for k, learner in zip(self.cols, self.learners, strict=True):
                if learner.labels >= self.cfg.min_labels:
                    out[sel, k] = learner.predict(x[sel])
        return out

    def forget(self, tokens: list[str]) -> None:
        self.pending.forget(tokens)
        self._learns.forget(tokens)

    def snapshot(self) -> dict[str, Any]:
        return {"learned": list(self.learned), "learners": [lr.state() for lr in self.learners],
                "pending": self.pending.state()}  # fmt: skip

    def restore(self, doc: dict[str, Any]) -> bool:
        """Go on from :meth:`snapshot`; False (nothing restored) for other horizons."""
        if tuple(doc["learned"]) != self.learned:
            return False
        for learner, state in zip(self.learners, doc["learners"], strict=True):
            learner.load(state)
        self.pending.load(doc["pending"])
        return True
