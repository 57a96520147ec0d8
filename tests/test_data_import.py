"""Importing freqtrade data folders safely: file names parsed into pair, timeframe and candle type,
non-price candles skipped and counted, folders searched recursively, jsongz read, mixed intervals
refused, and the selection (--timeframe, --timerange, --tokens) applied the same way everywhere."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import data_folder
from memed.cli.main import cli
from memed.data import load_dataset, synth_market
from memed.data.freqtrade import pair_to_token, parse_name, timeframe_minutes, token_to_pair
from memed.data.select import Selection, parse_timerange
from memed.errors import DataError


def freqtrade_frame(token: str, minutes: int, every: int, seed: int) -> pl.DataFrame:
    """A freqtrade candle file's columns (date, open, high, low, close, volume) for one token."""
    m = synth_market(1, minutes * every, seed=seed).gather_every(every)
    return m.select(pl.col("ts").alias("date"), "open", "high", "low", "close", "volume")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """What `freqtrade download-data -t 1m 1h` plus a futures download leave: the 1 m candles, the
    hourly ones, and the 8 h mark and funding-rate files (one in a sub-folder)."""
    root = tmp_path / "binance"
    (root / "futures").mkdir(parents=True)
    freqtrade_frame("X", 600, 1, 1).write_ipc(root / "X_USDT-1m.feather")
    freqtrade_frame("X", 10, 60, 2).write_ipc(root / "X_USDT-1h.feather")
    mark = freqtrade_frame("X", 5, 480, 3)
    mark.write_ipc(root / "futures" / "X_USDT-8h-mark.feather")
    mark.with_columns(pl.lit(0.0001).alias("close")).write_ipc(root / "X_USDT-8h-funding_rate.feather")
    return root


def test_file_names_are_parsed_the_freqtrade_way() -> None:
    n = parse_name(Path("1000PEPE_USDT_USDT-1m-futures.feather"))
    assert n is not None
    assert (n.pair, n.timeframe, n.candle_type, n.minutes, n.token) == (
        "1000PEPE_USDT_USDT", "1m", "futures", 1, "1000PEPE_USDT_USDT"
    )  # fmt: skip
    n = parse_name(Path("X_USDT-8h-funding_rate.feather"))
    assert n is not None
    assert (n.candle_type, n.minutes, n.is_price, n.token) == (
        "funding_rate",
        480,
        False,
        "X_USDT-funding_rate",
    )
    n = parse_name(Path("BTC_USDT-1h.json.gz"))
    assert n is not None
    assert (n.pair, n.minutes, n.candle_type) == ("BTC_USDT", 60, "spot")
    assert parse_name(Path("pumpfun.csv")) is None
    assert [timeframe_minutes(t) for t in ("1m", "5m", "4h", "1d", "1w")] == [1, 5, 240, 1440, 10080]
    with pytest.raises(ValueError, match="whole number"):
        timeframe_minutes("30s")


def test_pairs_and_tokens_map_both_ways() -> None:
    for pair, token in [("1000PEPE/USDT:USDT", "1000PEPE_USDT_USDT"), ("PEPE/USDT", "PEPE_USDT")]:
        assert pair_to_token(pair) == token
        assert token_to_pair(token) == pair
    with pytest.raises(ValueError, match="not a freqtrade pair"):
        token_to_pair("7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr")


def test_a_freqtrade_folder_imports_exactly_its_1m_candles(folder: Path, tmp_path: Path) -> None:
    alone, _ = load_dataset([folder / "X_USDT-1m.feather"])
    with pytest.raises(DataError, match=r"mixed bar intervals \(1 min: X_USDT; 60 min: X_USDT\)"):
        load_dataset([folder])
    picked, rej = load_dataset([folder], Selection.of(timeframe="1m"))
    assert picked.equals(alone)
    assert dict(rej.skipped) == {"mark": 1, "funding_rate": 1, "other_timeframe": 1}
    # the same through the CLI: refused with exit 2 and one line, then imported with --timeframe
    runner = CliRunner()
    out = tmp_path / "x.parquet"
    res = runner.invoke(cli, ["data", "import", str(folder), "--out", str(out)])
    assert res.exit_code == 2
    assert "mixed bar intervals" in res.output
    assert "--timeframe" in res.output
    res = runner.invoke(cli, ["data", "import", str(folder), "--out", str(out), "--timeframe", "1m"])
    assert res.exit_code == 0, res.output
    assert pl.read_parquet(out).equals(alone)
    assert "skipped 3 files" in res.output
    # asked for, the mark candles come in as their own token
    marks, _ = load_dataset([folder / "futures"], Selection.of(candle_types=["mark"]))
    assert marks["token"].unique().to_list() == ["X_USDT-mark"]


def test_jsongz_reads_like_feather(folder: Path, tmp_path: Path) -> None:
    frame = pl.read_ipc(folder / "X_USDT-1m.feather")
    rows = [[int(d.timestamp() * 1000), o, h, lo, c, v] for d, o, h, lo, c, v in frame.iter_rows()]
    nested = tmp_path / "json" / "deeper"
    nested.mkdir(parents=True)
    (nested / "X_USDT-1m.json.gz").write_bytes(gzip.compress(json.dumps(rows).encode()))
    got, _ = load_dataset([tmp_path / "json"])  # found in a sub-folder
    want, _ = load_dataset([folder / "X_USDT-1m.feather"])
    assert got.equals(want)


def test_timerange_and_tokens_select_rows(tmp_path: Path) -> None:
    assert parse_timerange("20260101-20260102") == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert parse_timerange("20260101-") == (datetime(2026, 1, 1, tzinfo=UTC), None)
    with pytest.raises(ValueError, match="not after"):
        parse_timerange("20260102-20260101")
    market = synth_market(4, 3000, seed=1)  # starts 2026-01-01 00:00
    src = tmp_path / "m.parquet"
    market.write_parquet(src)
    tokens = sorted(market["token"].unique().to_list())[:2]
    out = tmp_path / "o.parquet"
    res = CliRunner().invoke(cli, ["data", "import", str(src), "--out", str(out), "--timerange",
                                   "20260101-20260102", "--tokens", ",".join(tokens)])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = pl.read_parquet(out)
    want = market.filter(pl.col("token").is_in(tokens) & (pl.col("ts") < datetime(2026, 1, 2, tzinfo=UTC)))
    assert got.height == want.height > 0
    assert sorted(got["token"].unique().to_list()) == tokens
    res = CliRunner().invoke(cli, ["data", "import", str(src), "--out", str(out), "--timerange", "2026"])
    assert res.exit_code == 2
    assert "--timerange" in res.output
    res = CliRunner().invoke(cli, ["data", "import", str(src), "--out", str(out), "--tokens", "NOPE"])
    assert res.exit_code == 2
    assert "no bars left" in res.output


def test_a_model_set_on_another_interval_is_refused(tmp_path: Path) -> None:
    hourly = data_folder("pumpfun-hourly")
    packaged = Path(__file__).parents[1] / "src" / "memed" / "demo_models"
    res = CliRunner().invoke(cli, ["backtest", "--data", str(hourly), "--models", str(packaged),
                                   "--out", str(tmp_path / "bt")])  # fmt: skip
    assert res.exit_code == 2
    line = res.output.strip()
    assert "is for 1-minute bars" in line
    assert "60-minute bars" in line
    assert not (tmp_path / "bt").exists()
