"""``memed tune``: an Optuna study over walk-forward folds of the development period, kept in the
registry, resumable, and blind to the data's test period."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import optuna
import polars as pl
import pytest
from click.testing import CliRunner

from memed.cli.main import cli
from memed.config import load_config, parse_config
from memed.data import random_walk_market, write_dataset
from memed.errors import DataError
from memed.trainers.splits import calendar_cuts
from memed.tuning import apply
from memed.tuning.study import development_period, run_study

TOML = """
[train]
models = ["logreg"]
horizons = [15, 30, 60]
[signals]
models = ["logreg"]
policy = "bands"
[backtest]
train_minutes = 1200
test_minutes = 300
step_minutes = 300
max_folds = 2
workers = 1
"""


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    return random_walk_market(8, 3000, seed=11)


def _poisoned(bars: pl.DataFrame) -> pl.DataFrame:
    """The same bars with every test-period price multiplied by 50 and a token that only trades there:
    a trial that read any of it would score differently."""
    cfg = parse_config(TOML)
    cut = calendar_cuts(bars["ts"], cfg.train.train_fraction + cfg.train.val_fraction)[0]
    test = pl.col("ts") >= cut
    prices = ["open", "high", "low", "close"]
    out = bars.with_columns(
        [pl.when(test).then(pl.col(c) * 50).otherwise(pl.col(c)).alias(c) for c in prices]
    )
    extra = bars.filter(test & (pl.col("token") == bars["token"][0])).with_columns(
        pl.lit("INTRUDER").alias("token")
    )
    return pl.concat([out, extra])


def test_a_tiny_study_never_reads_the_test_period_and_resumes(market: pl.DataFrame, tmp_path: Path) -> None:
    cfg = parse_config(TOML)
    clean, dirty = tmp_path / "clean.parquet", tmp_path / "dirty.parquet"
    write_dataset(market, clean)
    write_dataset(_poisoned(market), dirty)
    a = run_study([str(clean)], cfg, tmp_path / "reg_a", name="s", trials=2)
    b = run_study([str(dirty)], cfg, tmp_path / "reg_b", name="s", trials=2)
    assert len(a.trials) == len(b.trials) == 2
    assert [t.value for t in a.trials] == [t.value for t in b.trials]  # the poison changed nothing
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert all(t.user_attrs["trades"] > 0 for t in a.trials)  # the bands trade: the values are not all 0
    # every fold of every trial tested before the cut, less the embargo (the longest horizon)
    cut = calendar_cuts(market["ts"], cfg.train.train_fraction + cfg.train.val_fraction)[0]
    dev = pl.read_parquet(tmp_path / "reg_a" / "studies" / "s" / "development.parquet")
    assert dev["ts"].max() < cut - timedelta(minutes=60)
    for t in a.trials:
        assert t.user_attrs["last_test_end"] <= str(cut)
    # resumed: the same name continues the study in Optuna's journal
    more = run_study([str(clean)], cfg, tmp_path / "reg_a", name="s", trials=1)
    assert len(more.trials) == 3
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(
            str(tmp_path / "reg_a" / "studies" / "s" / "study.journal")
        )
    )
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
    # the best settings, as a config memed train and memed backtest read
    best = load_config(tmp_path / "reg_a" / "studies" / "s" / "best.toml")
    assert best == apply(more.best_params, cfg)
    assert best.train.logreg.l2 == pytest.approx(more.best_params["train.logreg.l2"])
    assert best.signals.sell_threshold == pytest.approx(1 - more.best_params["signals.buy_threshold"])
    # other data under the same study name is refused, not mixed in
    with pytest.raises(DataError, match="digest"):
        run_study([str(dirty)], cfg, tmp_path / "reg_a", name="s", trials=1)


def test_the_development_period_ends_before_the_test_cut(market: pl.DataFrame, tmp_path: Path) -> None:
    cfg = parse_config(TOML)
    write_dataset(market, tmp_path / "m.parquet")
    dev = development_period([str(tmp_path / "m.parquet")], cfg, tmp_path / "study")
    cut = calendar_cuts(market["ts"], 0.8)[0]
    assert dev.test_cut == str(cut)
    kept = pl.read_parquet(dev.path)
    assert kept.height == dev.rows == market.filter(pl.col("ts") < cut - timedelta(minutes=60)).height


def test_the_cli_runs_a_study_and_prints_the_best_settings(market: pl.DataFrame, tmp_path: Path) -> None:
    write_dataset(market, tmp_path / "m.parquet")
    (tmp_path / "c.toml").write_text(TOML)
    args = ["tune", "--data", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "reg"), "--trials", "1",
            "--objective", "log_loss", "--config", str(tmp_path / "c.toml")]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "best trial 0: log_loss" in res.output
    assert "train.logreg.l2 = " in res.output
    meta = json.loads((tmp_path / "reg" / "studies" / "default" / "study.json").read_text())
    assert meta["objective"] == "log_loss"
    bad = CliRunner().invoke(cli, [*args[:-2], "--study", "../x"])
    assert bad.exit_code == 2
    assert "--study" in bad.output
