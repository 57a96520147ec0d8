"""One scorer per model kind: each owns its model's per-token state and scores it for both drivers.

A scorer wraps one served model (:class:`~memed.models.runtime.ModelRunner`) and is the only place that
knows what its kind of model needs:

* :meth:`Scorer.step` — the minute driver: the ready tokens of one minute (features and table rows);
* :meth:`Scorer.run` — the history driver: one block of a history, in order, carrying state from the
  block before where a token goes on;
* :meth:`Scorer.fit` / :meth:`Scorer.reset` — per-token state grown with the token table, restarted
  wherever the token's features restart (a new token, or a long gap: every unready bar), exactly as the
  trainers cut sequences into runs;
* :meth:`Scorer.snapshot` / :meth:`Scorer.restore` — that state in checkpoints.

``p_up`` is [rows, horizons], NaN where the model gives no probability (an unready row, a window not yet
full). ``seconds`` counts time inside the model's calls only. Which scorer serves a model is its family's
(:mod:`memed.models.families`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from memed.features.tokens import fit_rows
from memed.models.manifest import ModelKind
from memed.models.runtime import ModelRunner, run_sequence, step_stateful

WINDOW_BATCH = 2_048
"""Windows per ONNX Runtime call when a history is replayed through a window model."""


class Scorer(ABC):
    """A served model and its per-token state (none for a tabular model)."""

    kind: ClassVar[ModelKind]
    legacy_keys: ClassVar[tuple[str, ...]] = ()
    """Where checkpoints written before scorers kept their own state held this kind's state."""

    def __init__(self, runner: ModelRunner, n_features: int) -> None:
        if runner.entry.kind != self.kind:
            raise TypeError(f"{type(self).__name__} scores {self.kind} models, not {runner.entry.kind}")
        self.runner = runner
        self.name = runner.entry.name
        self.n_h = runner.n_horizons
        self.n_features = n_features
        self.seconds = 0.0

    @property
    def splits_tokens(self) -> bool:
        """Whether the history driver may cut a token between blocks (the scorer carries its state)."""
        return True

    def fit(self, capacity: int) -> None:  # noqa: B027 - a stateless model has nothing to grow
        """Grow per-token state to ``capacity`` table rows (a stateless model has none)."""

    def reset(self, rows: np.ndarray) -> None:  # noqa: B027 - nor to reset
        """Restart the state of the tokens at ``rows``."""

    @abstractmethod
    def step(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """One minute: ``x`` [n, F] the features of ready tokens at table ``rows`` → ``p_up`` [n, H]."""

    @abstractmethod
    def run(self, values: np.ndarray, ready: np.ndarray, runs: np.ndarray, continues: bool,
            open_end: bool) -> np.ndarray:  # fmt: skip
        """One block of a history: ``values`` [rows, F], ``ready`` [rows], ``runs`` the block's
        :func:`~memed.decision.history.ready_runs`; ``continues``: its first token began in an earlier
        block; ``open_end``: its last token goes on in the next block. → ``p_up`` [rows, H]."""

    def snapshot(self, rows: np.ndarray) -> dict[str, bytes]:
        return {}

    def restore(self, doc: dict[str, bytes], rows: np.ndarray) -> None:  # noqa: B027 - nor to restore
        """State of the tokens at ``rows`` from :meth:`snapshot` (of the same model)."""


class TabularScorer(Scorer):
    """One feature vector in, ``p_up`` out; no state."""

    kind = "tabular"

    def step(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.runner.predict(x)

    def run(self, values: np.ndarray, ready: np.ndarray, runs: np.ndarray, continues: bool,
            open_end: bool) -> np.ndarray:  # fmt: skip
        t0 = time.perf_counter()
        p = self.runner.predict(values) if len(values) else np.empty((0, self.n_h))
        self.seconds += time.perf_counter() - t0
        p[~ready] = np.nan
        return p


class StatefulScorer(Scorer):
    """A recurrent net stepped once per bar, its state ``h``/``c`` [layers, rows, hidden] kept per token.

    No probability in a run's first ``burn_in`` steps (the manifest's, as trained): the state has not yet
    forgotten where the run began, and a daemon may start anywhere in a token's history. A history is run
    through the whole-sequence form of the graph (verified bit-identical to stepping), one call per run of
    ready bars, the state carried into the next block where a run goes on; where that form cannot be
    derived, blocks hold whole tokens and their runs are stepped side by side."""

    kind = "stateful"
    legacy_keys = ("h", "c")

    def __init__(self, runner: ModelRunner, n_features: int) -> None:
        super().__init__(runner, n_features)
        layers, hidden = runner.entry.state_shape
        self.h = np.zeros((layers, 0, hidden), dtype=np.float32)
        self.c = np.zeros_like(self.h)
        self.burn_in = runner.entry.burn_in
        self.steps = np.zeros(0, dtype=np.int64)
        """Steps each token's state has taken since its run began."""
        self._carry: tuple[np.ndarray, np.ndarray] | None = None
        self._carry_steps = 0

    @property
    def splits_tokens(self) -> bool:
        return self.runner.sequence_session() is not None

    def fit(self, capacity: int) -> None:
        self.h = fit_rows(self.h, capacity, 0.0, axis=1)
        self.c = fit_rows(self.c, capacity, 0.0, axis=1)
        self.steps = fit_rows(self.steps, capacity, 0)

    def reset(self, rows: np.ndarray) -> None:
        self.h[:, rows] = 0.0
        self.c[:, rows] = 0.0
        self.steps[rows] = 0

    def step(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        p, h, c = self.runner.step(x, self.h[:, rows], self.c[:, rows])
        self.h[:, rows], self.c[:, rows] = h, c
        self.steps[rows] += 1
        p[self.steps[rows] <= self.burn_in] = np.nan
        return p

    def run(self, values: np.ndarray, ready: np.ndarray, runs: np.ndarray, continues: bool,
            open_end: bool) -> np.ndarray:  # fmt: skip
        p = np.full((len(values), self.n_h), np.nan)
        t0 = time.perf_counter()
        seq = self.runner.sequence_session()
        spans = runs.tolist()
        if seq is None:  # whole tokens per block (see splits_tokens): step them side by side
            stepped = step_stateful(self.runner, [values[a:b] for a, b in spans])
            for (a, b), pr in zip(spans, stepped, strict=True):
                p[a:b] = pr
                p[a : a + self.burn_in] = np.nan
        else:
            carried, self._carry = self._carry, None
            end_state = None
            done = 0
            for a, b in spans:
                start = carried if (a == 0 and continues) else None
                done = self._carry_steps if start is not None else 0
                p[a:b], end_state = run_sequence(seq, self.runner, values[a:b], start)
                p[a : a + max(0, self.burn_in - done)] = np.nan
            if end_state is not None and open_end and runs[-1, 1] == len(values):
                self._carry = end_state
                self._carry_steps = done + int(runs[-1, 1] - runs[-1, 0])
        self.seconds += time.perf_counter() - t0
        return p

    def snapshot(self, rows: np.ndarray) -> dict[str, bytes]:
        return {"h": np.ascontiguousarray(self.h[:, rows]).tobytes(),
                "c": np.ascontiguousarray(self.c[:, rows]).tobytes(),
                "steps": self.steps[rows].tobytes()}  # fmt: skip

    def restore(self, doc: dict[str, bytes], rows: np.ndarray) -> None:
        if doc.get("h"):
            shape = (self.h.shape[0], len(rows), self.h.shape[2])
            self.h[:, rows] = np.frombuffer(doc["h"], dtype=np.float32).reshape(shape)
            self.c[:, rows] = np.frombuffer(doc["c"], dtype=np.float32).reshape(shape)
            # a checkpoint from before burn-ins were counted held tokens stepped for as long as they ran
            steps = doc.get("steps")
            self.steps[rows] = np.frombuffer(steps, dtype=np.int64) if steps else self.burn_in


class WindowScorer(Scorer):
    """A model over each token's last ``window`` feature vectors, kept per token; no probability until the
    window is full. A history's blocks hold whole tokens."""

    kind = "window"
    legacy_keys = ("wcount", "win")

    def __init__(self, runner: ModelRunner, n_features: int) -> None:
        super().__init__(runner, n_features)
        self.w = runner.entry.window
        self.windows = np.zeros((0, self.w, n_features))
        self.count = np.zeros(0, dtype=np.int64)

    @property
    def splits_tokens(self) -> bool:
        return False

    def fit(self, capacity: int) -> None:
        self.count = fit_rows(self.count, capacity, 0)
        self.windows = fit_rows(self.windows, capacity, 0.0)

    def reset(self, rows: np.ndarray) -> None:
        self.count[rows] = 0

    def step(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        self.windows[rows, :-1] = self.windows[rows, 1:]
        self.windows[rows, -1] = x
        self.count[rows] += 1
        full = self.count[rows] >= self.w
        p = np.full((len(rows), self.n_h), np.nan)
        if full.any():
            p[full] = self.runner.predict_window(np.ascontiguousarray(self.windows[rows[full]]))
        return p

    def run(self, values: np.ndarray, ready: np.ndarray, runs: np.ndarray, continues: bool,
            open_end: bool) -> np.ndarray:  # fmt: skip
        p = np.full((len(values), self.n_h), np.nan)
        w = self.w
        t0 = time.perf_counter()
        for a, b in runs.tolist():
            if b - a < w:
                continue
            windows = sliding_window_view(values[a:b], w, axis=0).transpose(0, 2, 1)  # [n, w, F]
            for k in range(0, len(windows), WINDOW_BATCH):
                chunk = np.ascontiguousarray(windows[k : k + WINDOW_BATCH])
                p[a + w - 1 + k : a + w - 1 + k + len(chunk)] = self.runner.predict_window(chunk)
        self.seconds += time.perf_counter() - t0
        return p

    def snapshot(self, rows: np.ndarray) -> dict[str, bytes]:
        return {
            "wcount": self.count[rows].tobytes(),
            "win": np.ascontiguousarray(self.windows[rows]).tobytes(),
        }

    def restore(self, doc: dict[str, bytes], rows: np.ndarray) -> None:
        self.count[rows] = np.frombuffer(doc["wcount"], dtype=np.int64)
        if doc.get("win"):
            self.windows[rows] = np.frombuffer(doc["win"]).reshape(len(rows), self.w, self.n_features)
