"""The model-set manifest: a strict, versioned JSON document (no pickle anywhere)."""

from __future__ import annotations

from typing import Literal

import msgspec

MANIFEST_FORMAT = 1
ModelKind = Literal["tabular", "stateful", "window"]
Metrics = dict[str, float | None]
"""NaN (e.g. ROC AUC on a split with one class) is stored as null."""


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ModelEntry(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    """Model family (:data:`memed.models.families.FAMILIES`)."""
    file: str
    sha256: str
    kind: ModelKind
    """tabular: ``features`` [N, F] → ``p_up`` [N, H]; stateful: also ``h``/``c`` in and out (one step per
    tick); window: ``window`` [N, W, F] of the last W feature vectors."""
    state_shape: tuple[int, ...] = ()
    """stateful models: (layers, hidden) of h and c."""
    window: int = 0
    burn_in: int = 0
    """stateful models: steps of a run before a probability is served (the state has forgotten the start)."""
    forgets_after: int = 0
    """stateful models: steps the trained net took to forget where a run started (to 1e-6, measured on the
    longest runs of the table at training); the burn-in should cover it."""
    trees_per_horizon: tuple[int, ...] = ()
    onnx_max_abs_diff: float = 0.0
    """Largest |native - ONNX Runtime| probability on held-back rows (measured at export)."""
    metrics: dict[str, Metrics] = {}
    """Test-split metrics per horizon (key: minutes), computed with the ONNX model as served."""
    train_seconds: float = 0.0


class DataSummary(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    files: tuple[str, ...]
    tokens: int
    rows: int
    start: str
    end: str
    categories: dict[str, int] = {}
    dead_tail_rows_cut: int = 0
    token_names: tuple[str, ...] = ()
    """The tokens trained on (empty in sets made before it was recorded)."""


class SplitSummary(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    strategy: str
    embargo_minutes: int
    rows: dict[str, int]
    """Labelled rows per split (any horizon)."""
    fit_start: str = ""
    fit_end: str = ""
    """The first and last bar the models were fit on (training and validation rows; their labels look
    up to the longest horizon further). Empty in sets made before it was recorded: the data's range then
    stands for it."""


class Manifest(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    format: int = MANIFEST_FORMAT
    model_set_id: str
    created: str
    horizons: tuple[int, ...]
    interval_minutes: int
    feature_spec_hash: str
    feature_names: tuple[str, ...]
    gap_fill_max_minutes: int
    config_hash: str
    ties: str
    data: DataSummary
    split: SplitSummary
    constant_features: tuple[str, ...] = ()
    models: tuple[ModelEntry, ...] = ()
    baselines: dict[str, dict[str, Metrics]] = {}
    """Baseline name → horizon → metrics, on the same test rows as the models: majority, persistence,
    reversal and ``fitted_logistic`` (a logistic regression on two features, fit on the same training
    rows). Every metric may carry a day-block interval (``<metric>_lo``, ``<metric>_hi``); a model's
    ``roc_auc_vs_fitted_logistic`` (and its interval) is the paired AUC difference against that baseline."""
    fitted_baseline_features: tuple[str, ...] = ()
    """The two features of the ``fitted_logistic`` baseline."""
    warnings: tuple[str, ...] = ()
    """Test metrics too good to trust (a leak until proven otherwise)."""
    command: str = ""

    @property
    def market_context(self) -> bool:
        """The set was trained with the market context features."""
        from memed.features.spec import MARKET_FEATURES  # noqa: PLC0415

        return any(n in MARKET_FEATURES for n in self.feature_names)

    def model(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(name)
