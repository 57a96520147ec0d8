"""Fold groups — train once, replay its folds — run in this process or in parallel worker processes.

A group is a fold that retrains plus the folds after it that reuse its model set (``retrain_every``),
or every fold when a fixed model set is replayed. Groups are independent (each trains on its own window
and replays through a fresh decision path), so they can run side by side: ``backtest.workers``
processes (spawned, so no worker inherits a parent's threads or ONNX Runtime sessions), each limited to
its share of the cores, as many as the cores, the groups and the free memory allow.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import polars as pl

from memed.backtest.metrics import epoch_us
from memed.backtest.plan import Fold
from memed.backtest.replay import replay_signals
from memed.config import MemedConfig
from memed.data.loaders import write_dataset
from memed.decision import DecisionPath
from memed.errors import DataError
from memed.logs import get_logger
from memed.models.registry import ModelSet, load_model_set
from memed.trainers.progress import ProgressSink

log = get_logger("memed.backtest")

WORKER_BASE_BYTES = 1536 * 2**20
"""Memory one worker needs besides the data: the libraries (torch, ONNX Runtime, LightGBM, XGBoost) and
a training run's working set, as measured on the tiny and real sets (RSS peaks of 0.9-1.3 GiB)."""
WORKER_DATA_FACTOR = 30
"""A worker's data-dependent memory as a multiple of the bar frame's size (the training table with
labels, features and their copies)."""


@dataclass
class GroupResult:
    index: int
    model_set: str
    signals: pl.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    folds: tuple[int, ...] = ()
    policy: dict[str, object] | None = None
    """The served cost-aware policy's fit on the set's validation split (None: served with the bands)."""


def fold_groups(folds: list[Fold], fixed_models: bool) -> list[list[Fold]]:
    """Consecutive folds sharing one model set: each group starts at a retraining fold."""
    groups: list[list[Fold]] = []
    for f in folds:
        if groups and (fixed_models or not f.retrain):
            groups[-1].append(f)
        else:
            groups.append([f])
    return groups


def _train(fold: Fold, bars: pl.DataFrame, cfg: MemedConfig, out: Path) -> ModelSet:
    from memed.trainers.run import train_model_set  # noqa: PLC0415 - the train extra

    part = bars.filter((pl.col("ts") >= fold.train_start) & (pl.col("ts") < fold.train_end))
    if part.is_empty():
        raise DataError(f"fold {fold.index}: no training data")
    data = out / "folds" / f"fold-{fold.index:03d}-train.parquet"
    write_dataset(part, data)
    train = msgspec.structs.replace(cfg.train, train_fraction=0.75, val_fraction=0.2)
    manifest = train_model_set(
        [data],
        msgspec.structs.replace(cfg, train=train),
        out / "models",
        command=f"memed backtest (fold {fold.index})",
    )
    return load_model_set(out / "models" / manifest.model_set_id)


def run_group(
    index: int, group: list[Fold], bars: pl.DataFrame, cfg: MemedConfig, out: Path, models: Path | None
) -> GroupResult:
    """Train (unless ``models`` is given) and replay one group's test windows."""
    timings = {"training": 0.0}
    if models is None:
        t0 = time.perf_counter()
        model_set = _train(group[0], bars, cfg, out)
        timings["training"] = time.perf_counter() - t0
    else:
        model_set = load_model_set(models)
    path = DecisionPath(model_set, cfg.signals, cfg.risk)
    t0 = time.perf_counter()
    sig = replay_signals(path, bars, [(f.test_start, f.test_end) for f in group])
    timings["replay"] = time.perf_counter() - t0
    timings |= path.timings
    if sig.height:
        sig = sig.with_columns(pl.Series("fold", fold_of(sig["ts"], group)))
    edge = path.decide.edge
    policy = None if edge is None else msgspec.structs.asdict(edge)
    return GroupResult(index, model_set.id, sig, timings, tuple(f.index for f in group), policy)


def fold_of(ts: pl.Series, folds: list[Fold]) -> pl.Series:
    """The fold whose test window ``[start, end)`` holds each timestamp (the last such fold in ``folds``
    order where windows overlap; null where none does)."""
    t = ts.dt.epoch("us").to_numpy()
    order = np.argsort(t, kind="stable")
    t_sorted = t[order]
    lo = np.searchsorted(t_sorted, [epoch_us(f.test_start) for f in folds], side="left")
    hi = np.searchsorted(t_sorted, [epoch_us(f.test_end) for f in folds], side="left")
    fold_sorted = np.full(len(t), -1, dtype=np.int64)
    for f, a, b in zip(folds, lo.tolist(), hi.tolist(), strict=True):
        fold_sorted[a:b] = f.index
    fold = np.empty_like(fold_sorted)
    fold[order] = fold_sorted
    return pl.Series("fold", fold).replace(-1, None)


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose_workers(requested: int, groups: int, data_bytes: int, available: int | None = None) -> int:
    """``requested`` processes (0: automatic), never more than the groups, the cores and what fits in the
    free memory; at least one."""
    cores = os.cpu_count() or 1
    per_worker = WORKER_BASE_BYTES + WORKER_DATA_FACTOR * data_bytes
    fits = max(1, (available if available is not None else _available_memory()) // per_worker)
    return max(1, min(requested or cores, groups, fits))


def _worker_init(threads: int) -> None:
    try:
        import torch  # noqa: PLC0415 - the train extra; absent in a replay-only install

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _worker(
    index: int, group: list[Fold], bars_path: Path, cfg: MemedConfig, out: Path, models: Path | None
) -> GroupResult:
    return run_group(index, group, pl.read_parquet(bars_path), cfg, out, models)


def run_groups(
    groups: list[list[Fold]],
    bars: pl.DataFrame,
    cfg: MemedConfig,
    out: Path,
    models: Path | None,
    progress: ProgressSink,
) -> list[GroupResult]:
    workers = choose_workers(cfg.backtest.workers, len(groups), int(bars.estimated_size()))
    log.info("fold_groups", groups=len(groups), workers=workers, requested=cfg.backtest.workers)
    if workers <= 1:
        results = []
        for i, g in enumerate(groups):
            results.append(run_group(i, g, bars, cfg, out, models))
            progress.advance("folds", len(g))
        return results
    bars_path = out / "folds" / "bars.parquet"
    bars_path.parent.mkdir(parents=True, exist_ok=True)
    bars.write_parquet(bars_path)
    threads = max(1, (os.cpu_count() or 1) // workers)
    done: list[GroupResult] = []
    spawn = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=spawn, initializer=_worker_init, initargs=(threads,))
    with pool:
        futures = {
            pool.submit(_worker, i, g, bars_path, cfg, out, models): len(g) for i, g in enumerate(groups)
        }
        for fut in as_completed(futures):
            done.append(fut.result())
            progress.advance("folds", futures[fut])
    bars_path.unlink(missing_ok=True)
    return sorted(done, key=lambda r: r.index)
