"""What a family's trainer gets (:class:`TrainJob`) and hands back (:class:`Fitted`, with its
:class:`Trained` model): the one signature every ``trainer`` of :mod:`memed.models.families` has."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from memed.config import TrainConfig
from memed.models.runtime import session_options
from memed.trainers.dataset import TrainingData
from memed.trainers.progress import ProgressSink

PARITY_ROWS = 20_000
"""Test rows on which a native model and its ONNX export are compared."""


@dataclass
class Trained:
    name: str
    """The family (its kind comes from :mod:`memed.models.families`)."""
    model: onnx.ModelProto
    native_test: np.ndarray
    """The native (torch / LightGBM / XGBoost / numpy) probabilities on the parity rows."""
    state_shape: tuple[int, ...] = ()
    window: int = 0
    burn_in: int = 0
    forgets_after: int = 0
    trees_per_horizon: tuple[int, ...] = ()
    seconds: float = 0.0

    def session(self) -> ort.InferenceSession:
        """The exported model in ONNX Runtime, as it will be served."""
        return ort.InferenceSession(self.model.SerializeToString(), session_options(2))


@dataclass
class TrainJob:
    """A training run's table and splits, as every family's trainer receives them."""

    data: TrainingData
    cfg: TrainConfig
    x_tr: np.ndarray
    y_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray
    x_te: np.ndarray
    test_idx: np.ndarray
    """Rows of ``data.frame`` in the test split (the order of ``x_te``)."""
    val_idx: np.ndarray
    """Rows of ``data.frame`` in the validation split (the order of ``x_va``)."""
    parity_x: np.ndarray
    """Test rows on which the native model and its ONNX export are compared."""
    doc: str
    """Documentation string stamped into every exported graph."""
    progress: ProgressSink


@dataclass
class Fitted:
    trained: Trained
    p_test: np.ndarray
    """ONNX Runtime's ``p_up`` [test rows, H] of the exported model, scored as served."""
    p_val: np.ndarray
    """The same on the validation rows (the calibration is fitted on them)."""
    gap: float
    """Largest |native - ONNX Runtime| probability on the parity rows."""
    warnings: tuple[str, ...] = ()
    """What the manifest must say about this model beyond its metrics."""
