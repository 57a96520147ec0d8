"""Knowing live whether the models still predict: served probabilities scored against what happened
(delayed labels), the same stream in the daemon and in the backtester."""

from memed.monitor.labels import DelayedLabels, Resolved
from memed.monitor.scores import ScoreBoard

__all__ = ["DelayedLabels", "Resolved", "ScoreBoard"]
