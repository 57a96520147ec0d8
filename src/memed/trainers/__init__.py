"""Training (the ``train`` extra): the training table (labels, splits, cleaning), each family's trainer
(named by :mod:`memed.models.families`), evaluation with fitted baselines, ``memed train``.

Only the label and metric helpers are needed without the extra (the backtester scores its replay with
them); importing this package imports nothing heavy."""

from memed.trainers.labels import add_labels, label_col, past_col, usable_horizons
from memed.trainers.metrics import baseline_probabilities, binary_metrics, roc_auc

__all__ = [
    "add_labels",
    "baseline_probabilities",
    "binary_metrics",
    "label_col",
    "past_col",
    "roc_auc",
    "usable_horizons",
]
