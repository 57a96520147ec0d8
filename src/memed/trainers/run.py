"""``memed train``: history in, a validated model set in the registry out.

Every metric in the manifest is computed with the exported ONNX model run by ONNX Runtime exactly as it
is served (stateful LSTM stepped tick by tick), on the test split, beside the baselines on the same rows.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl

from memed.config import MemedConfig
from memed.data.frames import run_bounds
from memed.errors import DataError
from memed.logs import get_logger
from memed.models.manifest import DataSummary, Manifest, Metrics, ModelEntry, SplitSummary
from memed.models.registry import write_model_set
from memed.models.runtime import ModelRunner, run_stateful, session_options
from memed.trainers.dataset import TrainingData, build_training_data
from memed.trainers.leakage import constant_features
from memed.trainers.metrics import baseline_probabilities, binary_metrics
from memed.trainers.progress import NullProgress, ProgressSink
from memed.trainers.trained import Trained

PARITY_ROWS = 20_000
PARITY_TOLERANCE = 1e-5
log = get_logger("memed.train")


def _metrics_per_horizon(y: np.ndarray, p: np.ndarray, horizons: list[int]) -> dict[str, Metrics]:
    return {str(h): binary_metrics(y[:, k], p[:, k]) for k, h in enumerate(horizons)}


def _session(trained: Trained) -> ort.InferenceSession:
    return ort.InferenceSession(trained.model.SerializeToString(), session_options(2))


def _runs(data: TrainingData) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Split the (run-sorted) table into runs: features, labels, splits; and each row's run start."""
    x, y = data.x(), data.y()
    split = data.frame["split"].fill_null("").to_numpy()
    run = data.frame["run"].to_numpy()
    bounds = run_bounds(run)
    sl = [slice(a, b) for a, b in itertools.pairwise(bounds)]
    return [x[s] for s in sl], [y[s] for s in sl], [split[s] for s in sl], bounds


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
        raise DataError("not enough data: the train or test split is empty (too short a history?)")
    parity_x = x_te[:PARITY_ROWS]
    test_idx = np.flatnonzero(masks["test"].to_numpy())
    horizons = data.horizons
    doc = f"memed model; feature spec {data.spec.hash}; horizons {horizons}"
    entries: list[ModelEntry] = []
    files: dict[str, bytes] = {}
    t = cfg.train
    for name in models:
        t_model = time.perf_counter()
        p_test: np.ndarray
        if name in ("logreg", "lgbm", "xgb"):
            from memed.trainers import tabular  # noqa: PLC0415 - needs the train extra

            if name == "logreg":
                trained = tabular.train_logreg(x_tr, y_tr, parity_x, t.logreg, doc, progress)
            elif name == "lgbm":
                trained = tabular.train_lgbm(x_tr, y_tr, x_va, y_va, parity_x, t.lgbm, t.seed, doc, progress)
            else:
                trained = tabular.train_xgb(x_tr, y_tr, x_va, y_va, parity_x, t.xgb, t.seed, doc, progress)
            sess = _session(trained)
            p_test = np.concatenate(
                [sess.run(None, {"features": x_te[s : s + 65536]})[0] for s in range(0, len(x_te), 65536)]
            )
            gap = float(np.max(np.abs(p_test[: len(parity_x)] - trained.native_test), initial=0.0))
        elif name == "lstm":
            from memed.trainers import sequence  # noqa: PLC0415 - torch, train extra

            xs, ys, splits, _ = _runs(data)
            trained, net = sequence.train_lstm(
                sequence.Runs(xs, ys, splits), x_tr, t.lstm, t.seed, doc, progress
            )
            entry = _entry(trained, "", 0.0, {})
            runner = ModelRunner(entry, _session(trained), len(horizons))
            p_all = np.concatenate(run_stateful(runner, xs))
            torch_all = np.concatenate(sequence.lstm_forward_runs(net, xs))
            p_test = p_all[test_idx]
            gap = float(np.max(np.abs(p_test - torch_all[test_idx]), initial=0.0))
        elif name == "transformer":
            from memed.trainers import sequence  # noqa: PLC0415

            x_all, y_all = data.x(), data.y()
            split = data.frame["split"].fill_null("").to_numpy()
            run_id = data.frame["run"].to_numpy()
            trained, tnet = sequence.train_transformer(
                x_all, y_all, run_id, split, t.transformer, t.seed, doc, progress
            )
            ends = sequence.window_index(run_id, t.transformer.window)
            sess = _session(trained)
            p_test = np.full((len(test_idx), len(horizons)), np.nan)
            scored = np.isin(test_idx, ends)
            te_ends = test_idx[scored]
            onnx_p = sequence.onnx_window_predict(sess, x_all, te_ends, t.transformer.window, len(horizons))
            p_test[scored] = onnx_p
            native = sequence.transformer_predict(tnet, x_all, te_ends[:PARITY_ROWS], t.transformer.window)
            gap = float(np.max(np.abs(onnx_p[:PARITY_ROWS] - native), initial=0.0))
        else:
            raise DataError(f"unknown model family {name!r}")
        if gap > PARITY_TOLERANCE:
            log.warning("onnx_parity_gap", model=name, max_abs_diff=gap, tolerance=PARITY_TOLERANCE)
        blob = trained.model.SerializeToString()
        files[f"{name}.onnx"] = blob
        trained.seconds = time.perf_counter() - t_model
        entries.append(_entry(trained, hashlib.sha256(blob).hexdigest(), gap,
                              _metrics_per_horizon(y_te, p_test, horizons)))  # fmt: skip
        log.info("model_trained", model=name, seconds=round(trained.seconds, 1), onnx_max_abs_diff=gap,
                 trees=list(trained.trees_per_horizon) or None)  # fmt: skip
    up_rate = float(np.nanmean(y_tr)) if np.any(~np.isnan(y_tr)) else 0.5
    past = data.past(masks["test"])
    baselines: dict[str, dict[str, Metrics]] = {}
    for k, h in enumerate(horizons):
        for base, p in baseline_probabilities(past[:, k], up_rate).items():
            baselines.setdefault(base, {})[str(h)] = binary_metrics(y_te[:, k], p)
    frame = data.frame
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
        ),
        split=SplitSummary(
            strategy=t.split,
            embargo_minutes=data.embargo_minutes,
            rows={name: int(frame.filter(mask & labelled).height) for name, mask in masks.items()},
        ),
        constant_features=tuple(constant_features(frame.filter(masks["train"]), data.spec.names)),
        models=tuple(entries),
        baselines=baselines,
        command=command,
    )
    write_model_set(registry, manifest, files)
    return manifest


def _entry(trained: Trained, sha: str, gap: float, metrics: dict[str, Metrics]) -> ModelEntry:
    return ModelEntry(
        name=trained.name,
        file=f"{trained.name}.onnx",
        sha256=sha,
        kind=trained.kind,
        state_shape=trained.state_shape,
        window=trained.window,
        trees_per_horizon=trained.trees_per_horizon,
        onnx_max_abs_diff=gap,
        metrics=metrics,
        train_seconds=round(trained.seconds, 2),
    )
