"""Binary classification metrics, written out in numpy (no scikit-learn at serving or backtest time).

Rows whose label is NaN (ties excluded, or unknown) are dropped before any metric. Predictions are
``p_up`` in [0, 1]; the decision threshold for the count metrics is 0.5. Log loss clips ``p`` to
``[1e-6, 1 - 1e-6]`` so that hard 0/1 baselines get a large but finite loss.
"""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")
_EPS = 1e-6

DECISION_P = 0.5
"""Accuracy, precision, recall and F1 count p_up >= this as a predicted up."""


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with tied scores counted half (NaN when one class is absent)."""
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    ranks = np.empty(len(p))
    # average ranks over runs of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    ends = np.r_[starts[1:], len(p)]
    avg = (starts + ends + 1) / 2.0  # 1-based mean rank of each run
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` plus ``n`` and ``positive_rate`` on the labelled rows."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    keep = ~np.isnan(y) & ~np.isnan(p)
    y, p = y[keep], p[keep]
    n = len(y)
    if n == 0:
        empty: dict[str, float | None] = {name: float("nan") for name in METRICS}
        return empty | {"n": 0.0, "positive_rate": float("nan")}
    pred = p >= DECISION_P
    truth = y == 1
    tp = float(np.sum(pred & truth))
    fp = float(np.sum(pred & ~truth))
    fn = float(np.sum(~pred & truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    pc = np.clip(p, _EPS, 1 - _EPS)
    return {
        "accuracy": float(np.mean(pred == truth)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(y, p),
        "log_loss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))),
        "brier": float(np.mean((p - y) ** 2)),
        "n": float(n),
        "positive_rate": float(np.mean(truth)),
    }


def baseline_probabilities(past_return: np.ndarray, train_up_rate: float) -> dict[str, np.ndarray]:
    """The baselines every evaluation reports beside the models.

    * ``majority``: the training split's up-rate for every row (AUC 0.5 by construction);
    * ``persistence``: the last move over the horizon continues — p = 1 after a rise, 0 after a fall,
      0.5 when flat or unknown;
    * ``reversal``: the last move flips (1 - persistence).
    """
    sign = np.sign(np.nan_to_num(past_return, nan=0.0))
    persistence = 0.5 + 0.5 * sign
    return {
        "majority": np.full(len(past_return), train_up_rate),
        "persistence": persistence,
        "reversal": 1.0 - persistence,
    }
