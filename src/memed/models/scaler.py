"""The input scaler every non-tree model carries inside itself.

Fit on training rows only: per feature the mean and standard deviation of its non-null values (an
all-null or constant feature gets mean 0, scale 1). Applied as ``z = clip((x - mean) / scale, ±CLIP)``
with NaN → 0 (the training mean), identically in numpy, in torch and in the exported ONNX graph, so that
serving cannot apply a different scaler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLIP = 10.0

MIN_SCALE = 1e-12
"""A feature whose spread is smaller (constant on the training rows) is left unscaled."""


@dataclass(frozen=True)
class Scaler:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Scaler:
        with np.errstate(all="ignore"):
            finite = np.isfinite(x)
            count = finite.sum(axis=0)
            xs = np.where(finite, x, 0.0)
            mean = np.where(count > 0, xs.sum(axis=0) / np.maximum(count, 1), 0.0)
            var = np.where(finite, (x - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
        scale = np.sqrt(var)
        scale = np.where((count > 1) & (scale > MIN_SCALE) & np.isfinite(scale), scale, 1.0)
        return cls(mean.astype(np.float64), scale.astype(np.float64))

    def transform(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            z = np.clip((x - self.mean) / self.scale, -CLIP, CLIP)
        return np.where(np.isnan(z), 0.0, z)
