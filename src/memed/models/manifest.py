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


class Calibration(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One horizon's calibration map (:func:`memed.signals.calibration.calibrate` applies it)."""

    method: Literal["identity", "platt", "isotonic"] = "identity"
    a: float = 1.0
    b: float = 0.0
    """platt: ``sigmoid(a * logit(p) + b)``."""
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    """isotonic: knots of the non-decreasing piecewise-linear map (``x`` ascending)."""
    val_log_loss: dict[str, float] = {}
    """Each method's log loss on the validation split, fitted on its other half (cross-fitted by
    alternate days): the method with the lowest was chosen, then refitted on the whole split."""


class ReliabilityBin(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Test rows whose served ``p_up`` fell in ``[lo, hi)``: how many, their mean ``p_up``, and the share
    that went up, with its day-block interval."""

    lo: float
    hi: float
    rows: int
    mean_p: float
    rate: float
    rate_lo: float | None = None
    rate_hi: float | None = None


class ReferenceBins(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A distribution at training time, for drift checks: interior bin edges (deciles, merged where
    values tie) and the share of the training values in each bin."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    rows: int


class Reference(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What drift is measured against (:mod:`memed.monitor.psi`): every feature on the training split and
    the ensemble's p_up per horizon on the validation split."""

    features: dict[str, ReferenceBins] = {}
    p_up: dict[str, ReferenceBins] = {}


class EdgeFit(_Strict, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The cost-aware policy fitted on the validation split (:mod:`memed.trainers.edge`): the move sizes,
    the round-trip cost, and per side whether a margin on the expected net return paid after costs."""

    horizon: int
    """The decision horizon (minutes): the candidate whose trades made the most on validation per bar of
    capital (``horizon_scores``); the decision probability is the ensemble's at this horizon, and a trade
    is held at most this long."""
    horizon_scores: dict[str, float | None] = {}
    """Per candidate horizon: validation net log return per bar of capital of its best margins, as an
    overlapping portfolio (the total over trades x interval / horizon); null: no edge at that horizon."""
    cost: float
    """Round-trip cost as a log return (2 x (fee + slippage))."""
    sides: str = "long"
    """``signals.sides`` at training: the short side is fitted only for ``both``."""
    rows: int = 0
    up_move: float = 0.0
    down_move: float = 0.0
    long_edge: bool = False
    long_margin: float = 0.0
    long_trades: int = 0
    long_net_mean: float = 0.0
    long_net_total: float = 0.0
    short_edge: bool = False
    short_margin: float = 0.0
    short_trades: int = 0
    short_net_mean: float = 0.0
    short_net_total: float = 0.0
    long_bets: int = 0
    short_bets: int = 0
    """Independent bets among the trades: distinct (token, horizon-long block of time)."""
    stop_sigma: float = 0.0
    target_sigma: float = 0.0
    """Stop-loss and take-profit distances in units of the horizon's volatility, ATR(14) x sqrt(horizon
    bars), chosen on validation (0: the configured ``risk.stop_atr`` / ``take_profit_atr``)."""
    confirm_trades: int = 0
    confirm_net_mean: float = 0.0
    confirm_t: float = 0.0
    """The chosen settings' trades on the later half of the validation split (everything above was
    chosen on the earlier half): their count, mean net log return (with the stops and targets) and the
    t statistic of the net per horizon-long period of time (every token's trades in a period summed,
    periods without a trade counted as 0). An edge is kept only if ``confirm_t >= CONFIRM_T``."""
    exit_net_mean: float = 0.0
    """Validation mean net log return per trade with those stops and targets (``*_net_mean``: held to
    the horizon)."""


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
    """Test-split metrics per horizon (key: minutes), computed with the ONNX model and its calibration as
    served (``ece``: expected calibration error over 10 bins; ``ece_uncalibrated``: before the map)."""
    calibration: tuple[Calibration, ...] = ()
    """Per horizon (in the set's order), the map its ``p_up`` goes through before the ensemble (none:
    identity, as in sets made before calibration)."""
    reliability: dict[str, tuple[ReliabilityBin, ...]] = {}
    """Per horizon, the test split's reliability table of the calibrated ``p_up``."""
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
    ensemble_models: tuple[str, ...] = ()
    """The families the configured ensemble (``signals.models`` and ``signals.weights`` at training)
    averages, each calibrated; ``ensemble`` holds its test metrics per horizon (``ece`` included) and
    ``ensemble_reliability`` its reliability tables."""
    ensemble: dict[str, Metrics] = {}
    ensemble_reliability: dict[str, tuple[ReliabilityBin, ...]] = {}
    edge: EdgeFit | None = None
    """The cost-aware policy fitted on validation for the configured ensemble (``signals.policy =
    "cost_aware"`` serves it); none in sets made before it."""
    reference: Reference | None = None
    """Training distributions for drift checks (absent in sets made before it existed)."""
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
