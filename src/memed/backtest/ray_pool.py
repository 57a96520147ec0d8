"""Fold groups as Ray tasks (``backtest.executor = "ray"``): the same :func:`~memed.backtest.folds.run_group`
the process pool runs, one task per group, on whatever nodes the cluster has. The bars go into Ray's
object store once; a task whose worker process or node dies is retried (``backtest.ray_retries``) on
another, and every attempt is appended to ``<out>/folds/attempts.jsonl`` (group, node, process, time) so
that a retry can be seen afterwards. Results are gathered as they finish and sorted by group, so the
outputs are those of the local pool, byte for byte.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import polars as pl

from memed.backtest.folds import GroupResult, run_group
from memed.backtest.plan import Fold
from memed.config import MemedConfig
from memed.errors import ConfigError
from memed.logs import get_logger
from memed.trainers.progress import ProgressSink

log = get_logger("memed.backtest")


def _ray() -> Any:
    try:
        import ray  # noqa: PLC0415 - the ray extra
    except ImportError:
        raise ConfigError("backtest.executor = \"ray\" needs Ray: pip install 'memed[ray]'") from None
    return ray


def _group_task(index: int, group: list[Fold], bars: pl.DataFrame, cfg: MemedConfig, out: Path,
                models: Path | None) -> GroupResult:  # fmt: skip
    ray = _ray()
    attempt = {"group": index, "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
               "started": time.time()}  # fmt: skip
    with (out / "folds" / "attempts.jsonl").open("a") as f:
        f.write(json.dumps(attempt) + "\n")
    try:
        import torch  # noqa: PLC0415 - the train extra

        torch.set_num_threads(1)
    except ImportError:
        pass
    return run_group(index, group, bars, cfg, out, models)


def run_groups_on_ray(groups: list[list[Fold]], bars: pl.DataFrame, cfg: MemedConfig, out: Path,
                      models: Path | None, progress: ProgressSink) -> list[GroupResult]:  # fmt: skip
    ray = _ray()
    owns = not ray.is_initialized()
    if owns:
        ray.init(address=cfg.backtest.ray_address or None, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")  # fmt: skip
    (out / "folds").mkdir(parents=True, exist_ok=True)
    try:
        task = ray.remote(num_cpus=1, max_retries=cfg.backtest.ray_retries)(_group_task)
        shared = ray.put(bars)
        pending = {task.remote(i, g, shared, cfg, out, models): len(g) for i, g in enumerate(groups)}
        log.info("fold_groups_on_ray", groups=len(groups), nodes=len(ray.nodes()))
        done: list[GroupResult] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            done.append(ray.get(ready[0]))
            progress.advance("folds", pending.pop(ready[0]))
        return sorted(done, key=lambda r: r.index)
    finally:
        if owns:
            ray.shutdown()
