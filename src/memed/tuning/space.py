"""The search space of ``memed tune``: a trial's parameters, and the config they make.

Per family in ``train.models``, its main capacity and regularisation settings; under the bands policy
also the bands and the ATR stop/target (the cost-aware policy chooses its own margin, decision horizon,
stops and targets on each set's validation split, so it has nothing left to tune). Parameters are named
by their config key (``train.logreg.l2``), so a study's best parameters read as the settings they are,
and :func:`apply` turns any parameter dict — a trial's, or the study's best — into the config.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from memed.config import MemedConfig


class Trial(Protocol):
    """The part of ``optuna.Trial`` the space uses."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...


def suggest(trial: Trial, cfg: MemedConfig) -> dict[str, Any]:
    """One trial's parameters over ``cfg``'s families and policy."""
    models = cfg.train.models
    out: dict[str, Any] = {}
    if "logreg" in models:
        out["train.logreg.l2"] = trial.suggest_float("train.logreg.l2", 1e-3, 1e2, log=True)
    for name in ("lgbm", "xgb"):
        if name in models:
            k = f"train.{name}"
            out[f"{k}.learning_rate"] = trial.suggest_float(f"{k}.learning_rate", 0.01, 0.3, log=True)
            out[f"{k}.min_child_samples"] = trial.suggest_int(f"{k}.min_child_samples", 20, 2000, log=True)
            if name == "lgbm":
                out[f"{k}.num_leaves"] = trial.suggest_int(f"{k}.num_leaves", 4, 128, log=True)
            else:
                out[f"{k}.max_depth"] = trial.suggest_int(f"{k}.max_depth", 2, 10)
    for name in ("lstm", "transformer"):
        if name in models:
            k = f"train.{name}"
            out[f"{k}.learning_rate"] = trial.suggest_float(f"{k}.learning_rate", 1e-4, 1e-2, log=True)
    if cfg.signals.policy == "bands":
        out["signals.buy_threshold"] = trial.suggest_float("signals.buy_threshold", 0.51, 0.65)
        out["risk.stop_atr"] = trial.suggest_float("risk.stop_atr", 1.0, 20.0, log=True)
        out["risk.take_profit_atr"] = trial.suggest_float("risk.take_profit_atr", 1.0, 30.0, log=True)
    return out


def apply(params: dict[str, Any], cfg: MemedConfig) -> MemedConfig:
    """``cfg`` with each ``section.key`` (or ``train.family.key``) parameter set. The bands' buy
    threshold moves the others with it: sell mirrored around 0.5, strong bands 0.07 further out."""
    params = dict(params)
    buy = params.pop("signals.buy_threshold", None)
    if buy is not None:
        params |= {"signals.sell_threshold": 1 - buy, "signals.strong_buy_threshold": min(buy + 0.07, 1.0),
                   "signals.strong_sell_threshold": max(1 - buy - 0.07, 0.0)}  # fmt: skip
    doc = msgspec.to_builtins(cfg)
    for key, value in params.items():
        *path, leaf = key.split(".")
        node = doc
        for part in path:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"{key} is not a config key")
        node[leaf] = value
    return msgspec.convert(doc, MemedConfig)
