"""``memed train``: history in, a validated model set in the registry out.

Every metric in the manifest is computed with the exported ONNX model run by ONNX Runtime exactly as it
is served (stateful LSTM stepped tick by tick), on the test split, beside the baselines on the same rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import polars as pl

from memed.config import MemedConfig
from memed.data.frames import epoch_minutes
from memed.errors import ConfigError, DataError
from memed.logs import get_logger
from memed.models.families import family, load_part
from memed.models.manifest import (
    Calibration,
    DataSummary,
    Manifest,
    Metrics,
    ModelEntry,
    SplitSummary,
)
from memed.models.registry import write_model_set
from memed.monitor.reference import build_reference
from memed.signals.calibration import calibrate_columns
from memed.signals.ensemble import ensemble
from memed.trainers.baseline import FittedBaseline, baseline_features
from memed.trainers.calibration import fit_calibration
from memed.trainers.dataset import TrainingData, build_training_data
from memed.trainers.edge import fit_policy
from memed.trainers.evaluation import Evaluation, suspicious
from memed.trainers.leakage import constant_features
from memed.trainers.metrics import baseline_probabilities
from memed.trainers.progress import NullProgress, ProgressSink
from memed.trainers.trained import PARITY_ROWS, Fitted, Trained, TrainJob
from memed.trainers.uncertainty import day_index

PARITY_TOLERANCE = 1e-5
log = get_logger("memed.train")


def _fitted_baseline(job: TrainJob) -> tuple[tuple[str, ...], np.ndarray]:
    """The fitted 2-feature logistic on the training rows; its features and test probabilities."""
    names = job.data.spec.names
    chosen = baseline_features(names)
    cols = [names.index(n) for n in chosen]
    fitted = FittedBaseline.fit(chosen, job.x_tr[:, cols], job.y_tr, job.cfg.logreg.l2)
    return chosen, fitted.predict(job.x_te[:, cols])


def _trainer(name: str) -> Callable[[TrainJob], Fitted]:
    """The family's trainer; a clear error for an unknown family or a missing ``train`` extra."""
    try:
        fam = family(name)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    try:
        trainer: Callable[[TrainJob], Fitted] = load_part(fam.trainer)
    except ImportError as exc:
        raise ConfigError(
            f"training {name} needs the 'train' extra (pip install 'memed[train]'): {exc}"
        ) from None
    return trainer


def _model_set_id(data: TrainingData, cfg: MemedConfig, models: tuple[str, ...], created: datetime) -> str:
    digest = hashlib.sha256(
        "|".join([data.spec.hash, cfg.hash(), *data.files, *models, created.isoformat()]).encode()
    ).hexdigest()[:8]
    return f"{created.strftime('%Y%m%dT%H%M%SZ')}-{digest}"


def train_model_set(
    sources: Iterable[str | Path],
    cfg: MemedConfig,
    registry: Path,
    *,
    models: tuple[str, ...] | None = None,
    progress: ProgressSink | None = None,
    command: str = "",
) -> Manifest:
    """Train every requested family, export to ONNX, evaluate with ONNX Runtime, write the set."""
    progress = progress or NullProgress()
    models = models or cfg.train.models
    trainers = {name: _trainer(name) for name in models}
    created = datetime.now(UTC).replace(microsecond=0)
    t0 = time.perf_counter()
    data = build_training_data(sources, cfg)
    log.info("training_data", rows=data.frame.height, horizons=data.horizons, interval=data.interval_minutes,
             build_s=round(time.perf_counter() - t0, 1))  # fmt: skip
    masks = {name: data.split_mask(name) for name in ("train", "val", "test")}
    x_tr, y_tr = data.x(masks["train"]), data.y(masks["train"])
    x_va, y_va = data.x(masks["val"]), data.y(masks["val"])
    x_te, y_te = data.x(masks["test"]), data.y(masks["test"])
    if len(x_tr) == 0 or len(x_te) == 0:
        raise DataError(
            f"not enough data: {data.frame.height:,} rows are past the {data.spec.warmup_bars}-bar feature "
            f"warm-up, {len(x_tr):,} of them in the train split and {len(x_te):,} in the test split "
            "(too short a history?)"
        )
    horizons = data.horizons
    doc = f"memed model; feature spec {data.spec.hash}; horizons {horizons}"
    t = cfg.train
    job = TrainJob(data=data, cfg=t, x_tr=x_tr, y_tr=y_tr, x_va=x_va, y_va=y_va, x_te=x_te,
                   test_idx=np.flatnonzero(masks["test"].to_numpy()),
                   val_idx=np.flatnonzero(masks["val"].to_numpy()), parity_x=x_te[:PARITY_ROWS], doc=doc,
                   progress=progress)  # fmt: skip
    hours_va = (epoch_minutes(data.frame.filter(masks["val"])["ts"]) // 60).astype(np.int64)
    fams = _Families()
    for name in models:
        fams.fit(name, trainers[name], job, hours_va)
    entries, p_models, p_raw, fit_warnings = fams.entries, fams.p_cal, fams.p_raw, fams.warnings
    up_rate = float(np.nanmean(y_tr)) if np.any(~np.isnan(y_tr)) else 0.5
    past = data.past(masks["test"])
    fitted_features, p_fitted = _fitted_baseline(job)
    p_base = {
        **{b: np.column_stack([baseline_probabilities(past[:, k], up_rate)[b] for k in range(len(horizons))])
           for b in ("majority", "persistence", "reversal")},
        "fitted_logistic": p_fitted,
    }  # fmt: skip
    days = day_index(epoch_minutes(data.frame.filter(masks["test"])["ts"]))
    report = Evaluation(y_te, days, horizons, p_fitted, seed=t.seed)
    baselines = {b: report.metrics(p) for b, p in p_base.items()}
    entries = [
        msgspec.structs.replace(
            e,
            metrics=report.metrics(p_models[e.name], versus_fitted=True, uncalibrated=p_raw[e.name]),
            reliability=report.reliability(p_models[e.name]),
        )
        for e in entries
    ]
    served: tuple[str, ...] = tuple(n for n in cfg.signals.models if n in p_models) or tuple(p_models)
    p_ensemble = ensemble({n: p_models[n] for n in served}, cfg.signals.weights)
    p_val = ensemble({n: fams.p_val[n] for n in served}, cfg.signals.weights)
    edge = fit_policy(data, cfg, p_val, masks["val"])
    warnings = fit_warnings + [w for e in entries for w in suspicious(e.name, e.metrics)]
    for w in warnings:
        log.warning("suspicious_test_metric", warning=w)
    frame = data.frame
    fit = frame.filter(masks["train"] | masks["val"])
    labelled = ~pl.all_horizontal([pl.col(f"y_{h}").is_null() for h in horizons])
    manifest = Manifest(
        model_set_id=_model_set_id(data, cfg, models, created),
        created=created.isoformat(),
        horizons=tuple(horizons),
        interval_minutes=data.interval_minutes,
        feature_spec_hash=data.spec.hash,
        feature_names=tuple(data.spec.names),
        gap_fill_max_minutes=cfg.data.gap_fill_max_minutes,
        config_hash=cfg.hash(),
        ties=t.ties,
        data=DataSummary(
            files=tuple(data.files),
            tokens=frame["token"].n_unique(),
            rows=frame.height,
            start=str(frame["ts"].min()),
            end=str(frame["ts"].max()),
            categories=data.categories,
            dead_tail_rows_cut=data.dead_tail_rows_cut,
            token_names=tuple(sorted(frame["token"].unique().to_list())),
        ),
        split=SplitSummary(
            strategy=t.split,
            embargo_minutes=data.embargo_minutes,
            rows={name: int(frame.filter(mask & labelled).height) for name, mask in masks.items()},
            fit_start=str(fit["ts"].min()),
            fit_end=str(fit["ts"].max()),
        ),
        constant_features=tuple(constant_features(frame.filter(masks["train"]), data.spec.names)),
        models=tuple(entries),
        baselines=baselines,
        fitted_baseline_features=fitted_features,
        ensemble_models=served,
        ensemble=report.metrics(
            p_ensemble,
            versus_fitted=True,
            uncalibrated=ensemble({n: p_raw[n] for n in served}, cfg.signals.weights),
        ),
        ensemble_reliability=report.reliability(p_ensemble),
        edge=edge,
        reference=build_reference(list(data.spec.names), x_tr, p_val, list(horizons)),
        warnings=tuple(warnings),
        command=command,
    )
    write_model_set(registry, manifest, fams.files)
    return manifest


@dataclass
class _Families:
    """The families trained so far: manifest entries (metrics to come), ONNX files, calibrated and raw
    test probabilities, warnings."""

    entries: list[ModelEntry] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    p_cal: dict[str, np.ndarray] = field(default_factory=dict)
    p_raw: dict[str, np.ndarray] = field(default_factory=dict)
    p_val: dict[str, np.ndarray] = field(default_factory=dict)
    """Calibrated validation probabilities (the cost-aware policy is fitted on them)."""
    warnings: list[str] = field(default_factory=list)

    def fit(self, name: str, trainer: Callable[[TrainJob], Fitted], job: TrainJob, hours_va: np.ndarray
            ) -> None:  # fmt: skip
        t_model = time.perf_counter()
        fitted = trainer(job)
        trained, gap = fitted.trained, fitted.gap
        if gap > PARITY_TOLERANCE:
            log.warning("onnx_parity_gap", model=name, max_abs_diff=gap, tolerance=PARITY_TOLERANCE)
        blob = trained.model.SerializeToString()
        self.files[f"{name}.onnx"] = blob
        trained.seconds = time.perf_counter() - t_model
        # calibrated on the validation split, per horizon; every test metric is of the calibrated p_up
        n_h = fitted.p_test.shape[1]
        cals = tuple(fit_calibration(fitted.p_val[:, k], job.y_va[:, k], hours_va) for k in range(n_h))
        self.p_raw[name] = fitted.p_test
        self.p_cal[name] = calibrate_columns(cals, fitted.p_test)
        self.p_val[name] = calibrate_columns(cals, fitted.p_val)
        self.warnings.extend(fitted.warnings)
        self.entries.append(_entry(trained, hashlib.sha256(blob).hexdigest(), gap, {}, cals))
        log.info("model_trained", model=name, seconds=round(trained.seconds, 1), onnx_max_abs_diff=gap,
                 calibration=[c.method for c in cals],
                 trees=list(trained.trees_per_horizon) or None)  # fmt: skip


def _entry(trained: Trained, sha: str, gap: float, metrics: dict[str, Metrics],
           calibration: tuple[Calibration, ...]) -> ModelEntry:  # fmt: skip
    return ModelEntry(
        name=trained.name,
        file=f"{trained.name}.onnx",
        sha256=sha,
        kind=family(trained.name).kind,
        state_shape=trained.state_shape,
        window=trained.window,
        burn_in=trained.burn_in,
        forgets_after=trained.forgets_after,
        trees_per_horizon=trained.trees_per_horizon,
        onnx_max_abs_diff=gap,
        metrics=metrics,
        calibration=calibration,
        train_seconds=round(trained.seconds, 2),
    )
