"""``memed tune``: Optuna studies over walk-forward validation folds (the ``train`` extra)."""

from memed.tuning.space import apply, suggest

__all__ = ["apply", "suggest"]
