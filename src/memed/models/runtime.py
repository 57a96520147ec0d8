"""ONNX Runtime sessions for served models (no torch, lightgbm or xgboost needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from memed.errors import RegistryError
from memed.models.manifest import ModelEntry

SEQUENCE_CHUNK = 16_384
"""Steps per whole-sequence call (the state carries across chunks; bounds the memory of one call)."""


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Options that mattered on 2 cores: few intra-op threads, no spinning, quiet tree ops."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


_EXPECTED = {
    "tabular": (["features"], ["p_up"]),
    "stateful": (["features", "h", "c"], ["p_up", "h_out", "c_out"]),
    "window": (["window"], ["p_up"]),
}


@dataclass
class ModelRunner:
    """One served model: its manifest entry and its ONNX Runtime session."""

    entry: ModelEntry
    session: ort.InferenceSession
    n_horizons: int
    path: Path | None = None
    threads: int = 1
    _sequence: ort.InferenceSession | bool | None = field(default=False, repr=False)

    @classmethod
    def load(cls, entry: ModelEntry, path: Path, n_horizons: int, threads: int = 1, n_features: int = 0
             ) -> ModelRunner:  # fmt: skip
        """Open and check one model: input and output names, and (``n_features`` given) one row through
        the session whose output and state shapes must be what the manifest says: a set declaring 6
        horizons for graphs with 7 outputs is refused here, not at its first minute."""
        try:
            session = ort.InferenceSession(str(path), session_options(threads), providers=_providers())
        except Exception as exc:
            raise RegistryError(f"{path}: not a loadable ONNX model: {exc}") from None
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        want_in, want_out = _EXPECTED[entry.kind]
        if inputs != want_in or outputs != want_out:
            raise RegistryError(
                f"{path}: a {entry.kind} model needs inputs {want_in} and outputs {want_out}, "
                f"found {inputs} and {outputs}"
            )
        runner = cls(entry, session, n_horizons, path, threads)
        if n_features:
            runner.probe(n_features)
        return runner

    def probe(self, n_features: int) -> None:
        """One made-up row through the session; :class:`RegistryError` naming what does not match."""
        where = f"{self.path}: {self.entry.name}"
        try:
            if self.entry.kind == "tabular":
                outs = [self.predict(np.zeros((1, n_features)))]
            elif self.entry.kind == "window":
                outs = [self.predict_window(np.zeros((1, max(self.entry.window, 1), n_features)))]
            else:
                layers, hidden = self.entry.state_shape
                h = np.zeros((layers, 1, hidden), dtype=np.float32)
                outs = list(self.step(np.zeros((1, n_features)), h, h.copy()))
        except Exception as exc:
            raise RegistryError(
                f"{where}: the model does not run on one row of {n_features} features: {exc}"
            ) from None
        if outs[0].shape != (1, self.n_horizons):
            raise RegistryError(
                f"{where}: p_up has shape {list(outs[0].shape)} for one row, the manifest's "
                f"{self.n_horizons} horizons need [1, {self.n_horizons}]"
            )
        for name, got in zip(("h_out", "c_out"), outs[1:], strict=False):
            if got.shape != (*self.entry.state_shape[:1], 1, *self.entry.state_shape[1:]):
                raise RegistryError(f"{where}: {name} has shape {list(got.shape)}, the manifest's state "
                                    f"shape is {list(self.entry.state_shape)}")  # fmt: skip

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Tabular models: ``features`` [N, F] float64 → ``p_up`` [N, H]."""
        if len(features) == 1:
            return self.predict(_twice(features, 0))[:1]
        out: np.ndarray = self.session.run(None, {"features": features})[0]
        return out

    def step(self, features: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
        """Stateful models: one step for N tokens; ``h``/``c`` float32 [L, N, hidden]."""
        if len(features) == 1:
            p, h2, c2 = self.step(_twice(features, 0), _twice(h, 1), _twice(c, 1))
            return p[:1], h2[:, :1], c2[:, :1]
        p, h2, c2 = self.session.run(None, {"features": features, "h": h, "c": c})
        return p, h2, c2

    def sequence_session(self) -> ort.InferenceSession | None:
        """Stateful models: the verified whole-sequence form of the graph (built on first use), or
        ``None`` where it cannot be derived (callers step instead)."""
        if self._sequence is False:
            self._sequence = None
            if self.entry.state_shape and self.path is not None:
                import onnx  # noqa: PLC0415 - only replays need it; the daemon steps

                from memed.models.sequence_graph import sequence_session  # noqa: PLC0415

                self._sequence = sequence_session(
                    onnx.load(str(self.path)), self.session, session_options(self.threads), _providers()
                )
        return self._sequence if isinstance(self._sequence, ort.InferenceSession) else None

    def predict_window(self, windows: np.ndarray) -> np.ndarray:
        """Window models: ``windows`` [N, W, F] float64 → ``p_up`` [N, H]."""
        if len(windows) == 1:
            return self.predict_window(_twice(windows, 0))[:1]
        out: np.ndarray = self.session.run(None, {"window": windows})[0]
        return out


def _twice(x: np.ndarray, axis: int) -> np.ndarray:
    """A one-row batch as two equal rows. ONNX Runtime takes other kernels for one row than for several
    (tree ensembles sum their trees in another order, MatMul on x86 without AVX-512 another GEMV): the
    same row's ``p_up`` could differ in its last bits between a minute with one token and a backtest's
    block. Never asking for one row makes every row's result independent of its batch."""
    return np.ascontiguousarray(np.repeat(x, 2, axis=axis))


def _providers() -> list[str]:
    """CUDA first when onnxruntime-gpu is installed and sees a device, CPU always."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def run_stateful(runner: ModelRunner, sequences: list[np.ndarray], batch: int = 100_000) -> list[np.ndarray]:
    """A stateful model over whole sequences (each [T_i, F], state from zero): exactly the outputs the
    daemon gets stepping tokens minute by minute. Uses the whole-sequence graph where it is available
    (verified bit-identical), else steps every sequence side by side, one call per step."""
    seq = runner.sequence_session()
    if seq is not None:
        return [run_sequence(seq, runner, s)[0] for s in sequences]
    return step_stateful(runner, sequences, batch)


def run_sequence(
    seq: ort.InferenceSession,
    runner: ModelRunner,
    x: np.ndarray,
    state: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One token's consecutive steps ``x`` [T, F] through the whole-sequence graph ``seq``, from ``state``
    (``h``, ``c``; zero when ``None``): ``p_up`` [T, H] and the state after the last step, to continue
    from exactly where stepping would be."""
    layers, hidden = runner.entry.state_shape
    if state is None:
        h = np.zeros((layers, 1, hidden), dtype=np.float32)
        c = np.zeros_like(h)
    else:
        h, c = state
    out = np.empty((len(x), runner.n_horizons))
    for a in range(0, len(x), SEQUENCE_CHUNK):
        chunk = np.ascontiguousarray(x[a : a + SEQUENCE_CHUNK], dtype=np.float64)[None]
        p, h, c = seq.run(None, {"features": chunk, "h": h, "c": c})
        out[a : a + SEQUENCE_CHUNK] = p[0]
    return out, (h, c)


def step_stateful(runner: ModelRunner, sequences: list[np.ndarray], batch: int = 100_000) -> list[np.ndarray]:
    """Step a stateful model through whole sequences (each [T_i, F], state from zero), every sequence
    advanced side by side one step per call, exactly as the daemon advances tokens minute by minute."""
    layers, hidden = runner.entry.state_shape
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    outs = [np.empty((len(s), runner.n_horizons)) for s in sequences]
    for start in range(0, len(order), batch):
        group = order[start : start + batch]
        lengths = np.array([len(sequences[i]) for i in group])
        h = np.zeros((layers, len(group), hidden), dtype=np.float32)
        c = np.zeros_like(h)
        for t in range(int(lengths.max(initial=0))):
            active = int(np.sum(lengths > t))  # sorted by length: the active ones come first
            x = np.stack([sequences[group[k]][t] for k in range(active)])
            p, h_new, c_new = runner.step(x, h[:, :active], c[:, :active])
            h[:, :active], c[:, :active] = h_new, c_new
            for k in range(active):
                outs[group[k]][t] = p[k]
    return outs
