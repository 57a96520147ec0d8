"""What a trainer hands back: the ONNX model plus what the manifest needs to record about it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from memed.models.manifest import ModelKind


@dataclass
class Trained:
    name: str
    kind: ModelKind
    model: onnx.ModelProto
    native_test: np.ndarray
    """The native (torch / LightGBM / XGBoost / numpy) probabilities on the parity rows."""
    state_shape: tuple[int, ...] = ()
    window: int = 0
    trees_per_horizon: tuple[int, ...] = ()
    seconds: float = 0.0
    notes: dict[str, float] = field(default_factory=dict)
