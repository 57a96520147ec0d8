"""The model-family registry: every family memed can train and serve, in one place.

A family is a name (what ``train.models``, ``signals.models``, ``memed train --models`` and the manifest
say), the kind of model it exports (what its ONNX graph takes and returns), and three parts named by
reference (``module:attribute``), loaded only when needed so that naming them costs nothing:

* ``trainer`` — ``(TrainJob) -> Fitted``: trains on the job's splits, exports ONNX and scores the test
  split with ONNX Runtime as served (needs the ``train`` extra);
* ``exporter`` — builds the family's ONNX graph (called by its trainer);
* ``scorer`` — the :class:`~memed.decision.scorers.Scorer` class that serves the family's kind in the
  decision path, per token and per minute or over a whole history.

Adding a family is one entry below (and its name in :data:`FamilyName`), plus the family's own trainer,
exporter and, for a new kind, scorer. The config's model-name type, the CLI's family list and the
trainer's dispatch all come from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

from memed.models.manifest import ModelKind

FamilyName = Literal["logreg", "lgbm", "xgb", "lstm", "transformer"]


@dataclass(frozen=True)
class Family:
    name: FamilyName
    kind: ModelKind
    trainer: str
    exporter: str
    scorer: str
    summary: str


_TABULAR = "memed.decision.scorers:TabularScorer"
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "logreg",
            "tabular",
            "memed.trainers.tabular:fit_logreg",
            "memed.models.linear_graph:logistic_model",
            _TABULAR,
            "logistic regression (L-BFGS, scaling inside the graph)",
        ),
        Family(
            "lgbm",
            "tabular",
            "memed.trainers.tabular:fit_lgbm",
            "memed.models.tree_graph:ensemble_model",
            _TABULAR,
            "LightGBM per horizon, merged into one double-precision tree graph",
        ),
        Family(
            "xgb",
            "tabular",
            "memed.trainers.tabular:fit_xgb",
            "memed.models.tree_graph:ensemble_model",
            _TABULAR,
            "XGBoost per horizon, merged into one tree graph",
        ),
        Family(
            "lstm",
            "stateful",
            "memed.trainers.sequence:fit_lstm",
            "memed.models.torch_export:export_lstm",
            "memed.decision.scorers:StatefulScorer",
            "multi-horizon LSTM, one step per bar, state per token",
        ),
        Family(
            "transformer",
            "window",
            "memed.trainers.sequence:fit_transformer",
            "memed.models.torch_export:export_transformer",
            "memed.decision.scorers:WindowScorer",
            "transformer encoder over each token's last window of feature vectors",
        ),
    )
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)

if get_args(FamilyName) != FAMILY_NAMES:  # pragma: no cover - a registry edited on one side only
    raise RuntimeError(f"FamilyName {get_args(FamilyName)} and FAMILIES {FAMILY_NAMES} disagree")


def family(name: str) -> Family:
    """The family called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r} (known: {', '.join(FAMILY_NAMES)})") from None


def load_part(ref: str) -> Any:
    """The object a ``module:attribute`` reference names."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
