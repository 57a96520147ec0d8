"""Backtests across machines on Ray (``backtest.executor = "ray"``): on a local multi-node Ray cluster the
fold groups give the local process pool's signals and trades, and a node lost while it runs a fold group
does not lose the group — the task is retried on the other node."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import ray
from ray.cluster_utils import Cluster

from conftest import TINY_TOML
from memed.backtest.run import run_backtest
from memed.config import parse_config
from memed.data import synth_market, write_dataset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")

BT = (
    TINY_TOML.replace('models = ["logreg", "lgbm", "xgb", "lstm", "transformer"]', 'models = ["logreg"]')
    + """
[signals]
policy = "bands"
[backtest]
train_minutes = 900
test_minutes = 200
step_minutes = 200
max_folds = 3
"""
)


def attempts(out: Path) -> list[dict[str, object]]:
    path = out / "folds" / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_fold_groups_on_a_ray_cluster_equal_the_process_pool_and_survive_a_lost_node(tmp_path: Path) -> None:
    market = tmp_path / "market.parquet"
    write_dataset(synth_market(8, 1500, seed=31), market)
    pool = run_backtest([market], parse_config(BT + "workers = 2\n"), tmp_path / "pool")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": {
            "health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
            "health_check_failure_threshold": 3}},
    )  # fmt: skip
    victim = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    out = tmp_path / "ray"
    removed: list[float] = []

    def remove_the_victim_once_it_runs_a_group() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(a["node"] == victim.node_id for a in attempts(out)):
                cluster.remove_node(victim, allow_graceful=False)
                removed.append(time.monotonic())
                return
            time.sleep(0.05)

    ray.init(address=cluster.address, log_to_driver=False)
    try:
        killer = threading.Thread(target=remove_the_victim_once_it_runs_a_group)
        killer.start()
        got = run_backtest([market], parse_config(BT + 'executor = "ray"\n'), out)
        killer.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed, "no fold group ever started on the victim node"
    assert len(got["model_sets"]) == len(pool["model_sets"]) >= 2
    for name in ("signals.parquet", "trades.parquet"):
        a = pl.read_parquet(tmp_path / "pool" / name)
        b = pl.read_parquet(out / name)
        a, b = (f.drop("model_set") if "model_set" in f.columns else f for f in (a, b))
        assert a.height > 0
        assert a.equals(b), name
    # the group the lost node was running was run again, to the end, on the other node
    tries = attempts(out)
    lost = {a["group"] for a in tries if a["node"] == victim.node_id}
    assert lost
    assert all(any(a["group"] == g and a["node"] != victim.node_id for a in tries) for g in lost)
    assert len(tries) > len(pool["model_sets"])  # every group, and at least one retry
