"""Tabular trainers: logistic regression, LightGBM and XGBoost, one model per horizon, one ONNX graph
per family (every horizon in it).

Each trainer fits on the ``train`` split, early-stops on ``val`` and returns the native model's
probabilities on ``parity_x`` (held-back rows) so the caller can measure the ONNX gap.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import minimize

from memed.config import LogregConfig, TreesConfig
from memed.logs import get_logger
from memed.models.linear_graph import logistic_model, logistic_predict
from memed.models.scaler import Scaler
from memed.models.tree_graph import FlatTrees, ensemble_model, xgboost_base_margin
from memed.trainers.progress import NullProgress, ProgressSink
from memed.trainers.trained import Fitted, Trained, TrainJob

MIN_ROWS = 100
log = get_logger("memed.train")


def _labelled(y: np.ndarray) -> np.ndarray:
    mask: np.ndarray = ~np.isnan(y)
    return mask


def _trivial(y: np.ndarray) -> bool:
    """Too few labels, or one class only: the horizon gets a constant model (its base rate)."""
    if len(y) < MIN_ROWS or y.min() == y.max():
        log.warning("constant_model", rows=len(y), reason="too few labels or one class in train/val")
        return True
    return False


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _base_rate(y: np.ndarray) -> float:
    return float(np.mean(y)) if len(y) else 0.5


# --------------------------------------------------------------------------- logistic regression
def _fit_logistic(z: np.ndarray, y: np.ndarray, l2: float, max_iter: int) -> tuple[np.ndarray, float]:
    n, f = z.shape

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:f], theta[f]
        m = z @ w + b
        # log(1 + e^m) - y m, computed stably
        value = np.sum(np.logaddexp(0.0, m) - y * m) / n + 0.5 * l2 * np.dot(w, w) / n
        g = (1.0 / (1.0 + np.exp(-m)) - y) / n
        grad = np.append(z.T @ g + l2 * w / n, g.sum())
        return float(value), grad

    start = np.zeros(f + 1)
    start[f] = _logit(_base_rate(y))
    res = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return res.x[:f], float(res.x[f])


def train_logreg(
    x: np.ndarray, y: np.ndarray, parity_x: np.ndarray, cfg: LogregConfig, doc: str,
    progress: ProgressSink | None = None,
) -> Trained:  # fmt: skip
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    scaler = Scaler.fit(x)
    z = scaler.transform(x)
    n_h = y.shape[1]
    weights = np.zeros((x.shape[1], n_h))
    bias = np.zeros(n_h)
    progress.start("logreg", "logreg: horizons", n_h)
    for k in range(n_h):
        have = _labelled(y[:, k])
        yk = y[have, k]
        if _trivial(yk):
            bias[k] = _logit(_base_rate(yk))
        else:
            weights[:, k], bias[k] = _fit_logistic(z[have], yk, cfg.l2, cfg.max_iter)
        progress.advance("logreg")
    progress.finish("logreg")
    return Trained(
        name="logreg",
        model=logistic_model(scaler, weights, bias, doc),
        native_test=logistic_predict(scaler, weights, bias, parity_x),
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- trees
# fit(k, have, have_v) trains horizon k on the labelled train / validation rows, adds its trees to the
# shared FlatTrees and returns (native probabilities on the parity rows, base margin, tree count).
TreeFit = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, float, int]]


def _tree_family(
    name: str, trees: FlatTrees, y: np.ndarray, yv: np.ndarray, n_parity: int, fit: TreeFit,
    progress: ProgressSink,
) -> tuple[list[float], np.ndarray, list[int]]:  # fmt: skip
    """The per-horizon loop both tree families share: a constant model (a stump at the base rate) where
    train or validation labels are too few or one-class, ``fit`` otherwise."""
    n_h = y.shape[1]
    margins: list[float] = []
    native = np.zeros((n_parity, n_h))
    counts: list[int] = []
    progress.start(name, f"{name}: horizons", n_h)
    for k in range(n_h):
        have, have_v = _labelled(y[:, k]), _labelled(yv[:, k])
        if _trivial(y[have, k]) or _trivial(yv[have_v, k]):
            margin = _logit(_base_rate(y[have, k]))
            trees.stump(k, 0.0)
            native[:, k], count = 1.0 / (1.0 + math.exp(-margin)), 0
        else:
            native[:, k], margin, count = fit(k, have, have_v)
        margins.append(margin)
        counts.append(count)
        progress.advance(name, description=f"{name}: horizons (last: {count} trees)")
    progress.finish(name)
    return margins, native, counts


def train_lgbm(
    x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, parity_x: np.ndarray,
    cfg: TreesConfig, seed: int, doc: str, progress: ProgressSink | None = None,
) -> Trained:  # fmt: skip
    import lightgbm as lgb  # noqa: PLC0415 - training extra, imported only when training

    t0 = time.perf_counter()
    trees = FlatTrees()
    params = {
        "objective": "binary",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_child_samples": cfg.min_child_samples,
        "subsample": cfg.subsample,
        "subsample_freq": 1,
        "colsample_bytree": cfg.colsample,
        "num_threads": cfg.threads or os.cpu_count() or 1,
        "seed": seed,
        "deterministic": True,
        "verbose": -1,
    }
    stop: list[Callable[..., Any]] = (
        [lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)] if cfg.early_stopping_rounds else []
    )

    def fit(k: int, have: np.ndarray, have_v: np.ndarray) -> tuple[np.ndarray, float, int]:
        booster = lgb.train(
            params,
            lgb.Dataset(x[have], y[have, k], free_raw_data=True),
            num_boost_round=cfg.max_rounds,
            valid_sets=[lgb.Dataset(xv[have_v], yv[have_v, k])],
            callbacks=stop,
        )
        best = (booster.best_iteration if cfg.early_stopping_rounds else 0) or booster.current_iteration()
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        trees.add_lightgbm(booster, k)
        native: np.ndarray = np.asarray(booster.predict(parity_x))
        return native, 0.0, best  # LightGBM's first tree holds the base score

    margins, native, counts = _tree_family(
        "lgbm", trees, y, yv, len(parity_x), fit, progress or NullProgress()
    )
    return Trained(
        name="lgbm",
        model=ensemble_model(trees, margins, x.shape[1], float32_input=False, doc=doc),
        native_test=native,
        trees_per_horizon=tuple(counts),
        seconds=time.perf_counter() - t0,
    )


def train_xgb(
    x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, parity_x: np.ndarray,
    cfg: TreesConfig, seed: int, doc: str, progress: ProgressSink | None = None,
) -> Trained:  # fmt: skip
    import xgboost as xgb  # noqa: PLC0415 - training extra

    t0 = time.perf_counter()
    trees = FlatTrees()
    params = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "eta": cfg.learning_rate,
        "max_depth": cfg.max_depth,
        "min_child_weight": cfg.min_child_samples * 0.25,  # hessian p(1-p) <= 0.25 per row
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample,
        "tree_method": "hist",
        "nthread": cfg.threads or os.cpu_count() or 1,
        "seed": seed,
    }
    d_parity = xgb.DMatrix(parity_x)

    def fit(k: int, have: np.ndarray, have_v: np.ndarray) -> tuple[np.ndarray, float, int]:
        booster = xgb.train(
            params,
            xgb.DMatrix(x[have], y[have, k]),
            num_boost_round=cfg.max_rounds,
            evals=[(xgb.DMatrix(xv[have_v], yv[have_v, k]), "val")],
            early_stopping_rounds=cfg.early_stopping_rounds or None,
            verbose_eval=False,
        )
        best = int(booster.best_iteration) + 1 if cfg.early_stopping_rounds else booster.num_boosted_rounds()
        booster = booster[:best]
        trees.add_xgboost(booster, k)
        return booster.predict(d_parity), xgboost_base_margin(booster), best

    margins, native, counts = _tree_family(
        "xgb", trees, y, yv, len(parity_x), fit, progress or NullProgress()
    )
    return Trained(
        name="xgb",
        model=ensemble_model(trees, margins, x.shape[1], float32_input=True, doc=doc),
        native_test=native,
        trees_per_horizon=tuple(counts),
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- the families' trainers
SCORE_CHUNK = 65_536


def _fitted(job: TrainJob, trained: Trained) -> Fitted:
    """Score the validation and test splits with the exported graph in ONNX Runtime; the gap on the
    parity rows."""
    sess = trained.session()

    def score(x: np.ndarray) -> np.ndarray:
        starts = range(0, len(x), SCORE_CHUNK)
        chunks = [sess.run(None, {"features": x[s : s + SCORE_CHUNK]})[0] for s in starts]
        return np.concatenate(chunks) if chunks else np.empty((0, job.y_tr.shape[1]))

    p_test = score(job.x_te)
    gap = float(np.max(np.abs(p_test[: len(job.parity_x)] - trained.native_test), initial=0.0))
    return Fitted(trained, p_test, score(job.x_va), gap)


def fit_logreg(job: TrainJob) -> Fitted:
    return _fitted(job, train_logreg(job.x_tr, job.y_tr, job.parity_x, job.cfg.logreg, job.doc, job.progress))


def fit_lgbm(job: TrainJob) -> Fitted:
    c = job.cfg
    trained = train_lgbm(job.x_tr, job.y_tr, job.x_va, job.y_va, job.parity_x, c.lgbm, c.seed, job.doc,
                         job.progress)  # fmt: skip
    return _fitted(job, trained)


def fit_xgb(job: TrainJob) -> Fitted:
    c = job.cfg
    trained = train_xgb(job.x_tr, job.y_tr, job.x_va, job.y_va, job.parity_x, c.xgb, c.seed, job.doc,
                        job.progress)  # fmt: skip
    return _fitted(job, trained)
