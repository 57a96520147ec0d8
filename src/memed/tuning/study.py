"""``memed tune``: an Optuna study over walk-forward validation folds, kept in the registry.

**What a trial may see.** The data's test period is cut off before any trial runs: the rows from the
calendar cut that ``memed train`` holds out as its test split (``train.train_fraction +
val_fraction`` of all rows), less the embargo (the longest horizon) so no label reaches into it. The
rest, the *development period*, is written once to the study's folder (``development.parquet``) and is
all a trial ever reads.

**A trial** applies its parameters (:mod:`memed.tuning.space`) and runs the walk-forward backtest over
the development period: every fold retrains the families on its past, fits calibration and the policy on
that fold's validation split, and is replayed on the following window, after the embargo, through the
very decision path and simulator of ``memed backtest``. Its value is the model's net return after costs
over those windows (``--objective net``, maximised) or the served ensemble's log loss at the decision
horizon (``--objective log_loss``, minimised).

**The study** lives in Optuna's own journal storage (``study.journal``, plain JSON lines: no pickle),
so it can be resumed: the same ``--study`` name continues where it stopped, refusing development data
that changed. ``best.toml`` is the full config with the best parameters, for ``memed train --config``
and ``memed backtest --config``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import optuna
import polars as pl
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from memed.backtest.run import run_backtest
from memed.config import MemedConfig, to_toml
from memed.data import infer_interval_minutes, load_dataset, write_dataset
from memed.data.loaders import expand_sources
from memed.errors import DataError
from memed.logs import get_logger
from memed.trainers.labels import usable_horizons
from memed.trainers.progress import NullProgress, ProgressSink
from memed.trainers.splits import calendar_cuts
from memed.tuning.space import apply, suggest

log = get_logger("memed.tune")

Objective = Literal["net", "log_loss"]
DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {"net": "maximize", "log_loss": "minimize"}


@dataclass(frozen=True)
class Development:
    """The development period written for a study: its file, the test cut, and the last row kept."""

    path: Path
    test_cut: str
    last_row: str
    rows: int
    digest: str


def development_period(sources: list[str], cfg: MemedConfig, folder: Path) -> Development:
    """Cut the data's test period off (see the module docstring) and write the rest to ``folder``."""
    bars, _ = load_dataset([str(p) for p in expand_sources(sources)], cfg.data.selection())
    t = cfg.train
    cut = calendar_cuts(bars["ts"], t.train_fraction + t.val_fraction)[0]
    horizons = usable_horizons(t.horizons, infer_interval_minutes(bars))
    embargo = cfg.backtest.embargo_minutes or max(horizons or t.horizons)
    dev = bars.filter(pl.col("ts") < cut - timedelta(minutes=embargo)).sort("token", "ts")
    if dev.is_empty():
        raise DataError(f"no development data before the test cut {cut} (less the {embargo}-minute embargo)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "development.parquet"
    write_dataset(dev, path)
    digest = hashlib.sha256(dev.hash_rows().to_numpy().tobytes()).hexdigest()[:16]
    return Development(path, str(cut), str(dev["ts"].max()), dev.height, digest)


def objective_value(metrics: dict[str, Any], objective: Objective, cfg: MemedConfig) -> float:
    """A backtest's figure for the study: the model's net return, or its log loss at the decision horizon
    (the policies' horizon where one was fitted, else the longest of ``signals.decision_horizons``)."""
    if objective == "net":
        return float(metrics["trading"]["model"]["total_return"])
    chosen = [str(r["horizon"]) for r in metrics.get("policy", [])]
    h = max(set(chosen), key=chosen.count) if chosen else str(max(cfg.signals.decision_horizons))
    value = metrics["horizons"].get(h, {}).get("model", {}).get("log_loss")
    if value is None:
        raise DataError(f"the backtest has no log loss at horizon {h}")
    return float(value)


def run_study(
    sources: list[str],
    cfg: MemedConfig,
    registry: Path,
    *,
    name: str,
    trials: int,
    objective: Objective = "net",
    progress: ProgressSink | None = None,
) -> optuna.Study:
    """Run ``trials`` more trials of study ``name`` (created, or resumed) in ``registry/studies``."""
    progress = progress or NullProgress()
    folder = registry / "studies" / name
    dev = development_period(sources, cfg, folder)
    meta_path = folder / "study.json"
    meta = {"test_cut": dev.test_cut, "last_row": dev.last_row, "rows": dev.rows, "digest": dev.digest,
            "objective": objective, "config_hash": cfg.hash()}  # fmt: skip
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        changed = [k for k in ("digest", "objective", "config_hash") if old.get(k) != meta[k]]
        if changed:
            raise DataError(
                f"study {name!r} was started with other {', '.join(changed)} ({meta_path}); "
                "start a new study (--study) for new data, objective or base config"
            )
    meta_path.write_text(json.dumps(meta, indent=2))
    storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True, direction=DIRECTIONS[objective],
        sampler=optuna.samplers.TPESampler(seed=cfg.train.seed + len(_done(storage, name))),
    )  # fmt: skip
    progress.start("trials", f"tune {name}: {trials} trials", trials)

    def run_trial(trial: optuna.Trial) -> float:
        params = suggest(trial, cfg)
        trial_cfg = apply(params, cfg)
        out = folder / f"trial-{trial.number:04d}"
        try:
            metrics = run_backtest([dev.path], trial_cfg, out)
        finally:
            _keep_metrics_only(out)
        value = objective_value(metrics, objective, trial_cfg)
        trial.set_user_attr("trades", metrics["trading"]["model"]["trades"])
        trial.set_user_attr("folds", [p["fold"] for p in metrics["plan"]])
        trial.set_user_attr("last_test_end", max(p["test_end"] for p in metrics["plan"]))
        log.info("trial", number=trial.number, value=value, params=params)
        return value

    def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        best = f"best {study.best_value:+.5g}" if _any_complete(study) else "no trial done"
        progress.advance("trials", description=f"tune {name}: trial {trial.number} {trial.value}, {best}")

    study.optimize(run_trial, n_trials=trials, callbacks=[advance])
    progress.finish("trials")
    if _any_complete(study):
        (folder / "best.toml").write_text(
            f"# memed tune --study {name}: best of {len(study.trials)} trials, {objective} "
            f"{study.best_value:+.6g} on the development period (test cut {dev.test_cut})\n"
            + to_toml(apply(study.best_params, cfg)),
            encoding="utf-8",
        )
    return study


def _done(storage: JournalStorage, name: str) -> list[int]:
    """Trial numbers already in the study (0 when it is new): a resumed study reseeds its sampler."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return []
    return [t.number for t in storage.get_all_trials(study_id, deepcopy=False)]


def _any_complete(study: optuna.Study) -> bool:
    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def _keep_metrics_only(out: Path) -> None:
    """A trial's backtest folder keeps its ``metrics.json``; the rest (signals, trades, fold models)
    would fill the disk over a long study."""
    if not out.exists():
        return
    for child in out.iterdir():
        if child.name != "metrics.json":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
