"""The freqtrade example's merge, run on a real signals.parquet from `memed backtest`: every BUY becomes
an entry on the candle of its bar, with memed's stop, take-profit and notional, and nothing else enters.
freqtrade itself is not installed here; the merge and the pair mapping need only the standard library."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import data_folder
from memed.cli.main import cli
from memed.data import load_dataset
from memed.data.freqtrade import pair_to_token, token_to_pair

EXAMPLE = Path(__file__).parents[1] / "examples" / "freqtrade"


def example_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("memed_signals", EXAMPLE / "memed_signals.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def backtest_signals(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    folder = data_folder("binance-futures-1m")
    out = tmp_path_factory.mktemp("bt")
    config = out / "bands.toml"
    config.write_text('[signals]\npolicy = "bands"\n[backtest]\ntrain_minutes = 1440\ntest_minutes = 1440\n'
                      "step_minutes = 1440\n")  # fmt: skip
    packaged = Path(__file__).parents[1] / "src" / "memed" / "demo_models"
    args = ["backtest", "--data", str(folder), "--models", str(packaged), "--out", str(out), "--timerange",
            "20260201-20260205", "--allow-in-sample", "--config", str(config)]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return pl.read_parquet(out / "signals.parquet")


def test_every_buy_enters_on_its_candle(backtest_signals: pl.DataFrame) -> None:
    mod = example_module()
    pair = "1000PEPE/USDT:USDT"
    token = mod.pair_to_token(pair)
    assert token == "1000PEPE_USDT_USDT"
    bars, _ = load_dataset([data_folder("binance-futures-1m")])
    candles = bars.filter(pl.col("token") == token)["ts"].to_list()  # freqtrade's candle dates: open times
    mine = backtest_signals.filter(pl.col("token") == token)
    cols = mod.signal_columns(candles, mine.to_dicts())
    buys = mine.filter(pl.col("action").is_in(["BUY", "STRONG_BUY"]) & (pl.col("side") == "long"))
    sells = mine.filter(pl.col("action").is_in(["SELL", "STRONG_SELL"]))
    assert buys.height > 10
    entered = {candles[i]: i for i, flag in enumerate(cols["enter_long"]) if flag}
    assert set(entered) == set(buys["ts"].to_list())  # every BUY, on the candle of its bar, and no other
    for row in buys.iter_rows(named=True):
        i = entered[row["ts"]]
        assert cols["memed_stop"][i] == row["stop_loss"]
        assert cols["memed_take"][i] == row["take_profit"]
        assert cols["memed_notional"][i] == row["notional"]
        assert cols["memed_stop"][i] < bars.filter(pl.col("token") == token)["close"][i]
    assert sum(cols["exit_long"]) == sells.height


def test_the_pair_mapping_agrees_with_memeds_both_ways() -> None:
    mod = example_module()
    for pair in ("1000PEPE/USDT:USDT", "PEPE/USDT", "WIF/USDC"):
        assert mod.pair_to_token(pair) == pair_to_token(pair)
        assert mod.token_to_pair(pair_to_token(pair)) == token_to_pair(pair_to_token(pair)) == pair


def test_the_strategy_is_valid_python_using_freqtrades_interface() -> None:
    tree = ast.parse((EXAMPLE / "MemedStrategy.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MemedStrategy")
    methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    assert {"populate_indicators", "populate_entry_trend", "populate_exit_trend", "custom_stoploss",
            "custom_exit", "custom_stake_amount"} <= methods  # fmt: skip
    assert "stoploss_from_absolute" in (EXAMPLE / "MemedStrategy.py").read_text()
