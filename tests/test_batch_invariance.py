"""A row's p_up does not depend on the batch it is scored in: the daemon scores a minute of one token, a
backtest blocks of thousands, and both must give the same bits. ONNX Runtime takes other kernels for a
one-row batch (tree ensembles sum their trees in another order; MatMul another GEMV on x86 without
AVX-512): on such a machine the packaged set's trees gave 161 of 6,144 values one ULP apart and the
kill-and-restart parity check failed on one row. ``ModelRunner`` never asks for one row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memed.daemon.demo import DEMO_MODELS
from memed.models.registry import load_model_set

ROWS = 1024


def _sets(tiny_registry: Path) -> list[Path]:
    return [tiny_registry, *sorted(p for p in DEMO_MODELS.iterdir() if (p / "manifest.json").exists())]


@pytest.mark.parametrize("which", ["tiny", "packaged"])
def test_every_served_model_gives_a_row_the_same_p_up_alone_or_in_a_batch(
    which: str, tiny_registry: Path
) -> None:
    sets = _sets(tiny_registry)
    path = sets[0] if which == "tiny" else sets[-1]
    ms = load_model_set(path)
    rng = np.random.default_rng(5)
    n_features = len(ms.manifest.feature_names)
    x = rng.normal(size=(ROWS, n_features)) * 2.0
    x[rng.random(x.shape) < 0.02] = np.nan
    checked = []
    for name, runner in ms.runners.items():
        if runner.entry.kind == "tabular":
            batch = [runner.predict(x)]
            alone = [np.vstack([runner.predict(x[i : i + 1]) for i in range(ROWS)])]
        elif runner.entry.kind == "window":
            w = rng.normal(size=(ROWS, max(runner.entry.window, 1), n_features))
            batch = [runner.predict_window(w)]
            alone = [np.vstack([runner.predict_window(w[i : i + 1]) for i in range(ROWS)])]
        else:
            layers, hidden = runner.entry.state_shape
            h = rng.normal(size=(layers, ROWS, hidden)).astype(np.float32)
            c = rng.normal(size=(layers, ROWS, hidden)).astype(np.float32)
            batch = list(runner.step(x, h, c))
            rows = [runner.step(x[i : i + 1], h[:, i : i + 1], c[:, i : i + 1]) for i in range(ROWS)]
            alone = [np.vstack([r[0] for r in rows]), np.concatenate([r[1] for r in rows], axis=1),
                     np.concatenate([r[2] for r in rows], axis=1)]  # fmt: skip
        for got, want in zip(alone, batch, strict=True):
            assert got.shape == want.shape
            assert np.array_equal(got, want, equal_nan=True), (name, int((got != want).sum()))
        checked.append(name)
    assert checked == list(ms.runners)
