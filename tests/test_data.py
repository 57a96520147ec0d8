import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from conftest import FOLDERS, data_folder, real_bars
from memed.cli.main import cli
from memed.data import (
    GapRule,
    fill_gaps,
    gap_stats,
    infer_interval_minutes,
    load_dataset,
    read_bars,
    synth_market,
    validate_bars,
)
from memed.errors import DataError

# Row counts of ../shared/data as documented in its README (and re-counted by this import).
EXPECTED = {
    "binance-futures-1m": (96_210, 2, 1),
    "binance-spot-5m": (None, 4, 5),
    "freqtrade-gaps": (13_681, 1, 1),
    "pumpfun-hourly": (24_795, 289, 60),
}


@pytest.mark.parametrize("folder", FOLDERS)
def test_import_every_shared_folder(folder: str, tmp_path: Path) -> None:
    bars, rejections = load_dataset([data_folder(folder)])
    rows, tokens, interval = EXPECTED[folder]
    if rows is not None:
        assert bars.height == rows
    assert bars["token"].n_unique() == tokens
    assert infer_interval_minutes(bars) == interval
    assert rejections.total == 0
    assert bars.columns[:7] == ["token", "ts", "open", "high", "low", "close", "volume"]
    assert bars.equals(bars.sort(["token", "ts"]))
    out = tmp_path / "d.parquet"
    res = CliRunner().invoke(cli, ["data", "import", str(data_folder(folder)), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert pl.read_parquet(out).equals(bars)


def test_spot_5m_rows_per_token() -> None:
    counts = dict(real_bars("binance-spot-5m").group_by("token").len().iter_rows())
    assert set(counts) == {"BONK_USDT", "WIF_USDT", "FLOKI_USDT", "BOME_USDT"}
    assert all(50_000 <= n <= 72_100 for n in counts.values())
    assert sum(counts.values()) == real_bars("binance-spot-5m").height


def test_freqtrade_gap_fixture_has_538_gaps() -> None:
    bars = real_bars("freqtrade-gaps")
    stats = gap_stats(bars, GapRule(1, 15)).row(0, named=True)
    assert stats["gaps"] == 538
    filled = fill_gaps(bars, GapRule(1, 15))
    assert filled.height == bars.height + stats["missing_bars"]
    assert filled.filter(pl.col("filled")).select((pl.col("volume") == 0).all()).item()
    steps = filled.select(pl.col("ts").diff().dt.total_minutes()).drop_nulls().to_series()
    assert steps.max() == 1  # every short gap closed


def test_pumpfun_gaps_restart_or_fill_by_rule() -> None:
    bars = real_bars("pumpfun-hourly")
    strict = gap_stats(bars, GapRule(60, 15)).select(pl.exclude("token").sum()).row(0, named=True)
    assert strict["filled_gaps"] == 0
    assert strict["restarts"] == strict["gaps"] > 0
    loose = fill_gaps(bars, GapRule(60, 180))
    segments = loose.group_by("token").agg(pl.col("segment").max()).select(pl.col("segment").sum()).item()
    assert 0 < segments < strict["restarts"]
    flat = loose.filter(pl.col("filled"))
    assert (
        flat.select((pl.col("open") == pl.col("close")) & (pl.col("high") == pl.col("low"))).to_series().all()
    )


def test_invalid_rows_are_dropped_and_counted() -> None:
    t0 = pl.datetime(2026, 1, 1, time_zone="UTC")
    raw = pl.DataFrame(
        {
            "token": ["A"] * 6,
            "minute": [0, 1, 2, 3, 3, 4],
            "open": [1.0, -1.0, 1.0, 1.0, 1.0, float("nan")],
            "high": [1.0, 1.0, 0.5, 1.0, 1.0, 1.0],
            "low": [1.0, 1.0, 0.9, 1.0, 1.0, 1.0],
            "close": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            "volume": [1.0, 1.0, 1.0, -2.0, 1.0, 1.0],
        }
    ).with_columns(ts=pl.select(t0).item() + pl.duration(minutes=pl.col("minute")))
    clean, rej = validate_bars(raw.drop("minute"))
    assert rej.as_dict() == {"bad_price": 2, "high_below_low": 1, "bad_volume": 1}
    assert clean.height == 2
    dup, rej2 = validate_bars(pl.concat([clean, clean]))
    assert rej2.as_dict() == {"duplicate_ts": 2}
    assert dup.equals(clean)


def test_price_only_csv_is_flat_bars(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("token,ts,price\nX,1767225600,0.5\nX,1767225660,0.25\n")
    bars, rej = read_bars(path)
    assert rej.total == 0
    assert bars["open"].to_list() == bars["close"].to_list() == [0.5, 0.25]
    assert bars["volume"].to_list() == [0.0, 0.0]


def test_freqtrade_json(tmp_path: Path) -> None:
    path = tmp_path / "PEPE_USDT-1m.json"
    path.write_text(json.dumps([[1767225600000, 1, 2, 0.5, 1.5, 10], [1767225660000, 1.5, 2, 1, 1, 0]]))
    bars, _ = read_bars(path)
    assert bars["token"].unique().to_list() == ["PEPE_USDT"]
    assert bars["ts"].dt.epoch("s").to_list() == [1767225600, 1767225660]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("trunc.parquet", b"PAR1\x00\x00garbage", "cannot read parquet file"),
        ("nocol.csv", b"ts,open,high,low\n1,1,1,1\n", "missing column(s): close, volume"),
        ("notlist.json", b'{"a": 1}', "must be a list"),
        ("broken.json", b"[[1, 2", "not valid JSON"),
        ("x.txt", b"hello", "unsupported file type"),
    ],
)
def test_bad_files_give_clear_error_and_exit_2(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_bars(path)
    res = CliRunner().invoke(cli, ["data", "import", str(path), "--out", str(tmp_path / "o.parquet")])
    assert res.exit_code == 2
    assert res.output.startswith("error: ")
    assert message in res.output
    assert "Traceback" not in res.output


def test_truncated_real_parquet(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    synth_market(3, 100, 0).write_parquet(good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="cannot read parquet"):
        read_bars(cut)


def test_synth_is_reproducible_and_valid() -> None:
    a = synth_market(20, 600, seed=7)
    assert a.equals(synth_market(20, 600, seed=7))
    assert not a.equals(synth_market(20, 600, seed=8))
    clean, rej = validate_bars(a)
    assert rej.total == 0
    assert clean.height == a.height
    ties = a.select((pl.col("close") == pl.col("close").shift(1).over("token")).mean()).item()
    assert 0.05 < ties < 0.6  # prices move in ticks
    assert sum(a.select(pl.col("liquidity", "buys", "sells", "market_cap").null_count()).row(0)) == 0
    assert gap_stats(a, GapRule(1, 15))["gaps"].sum() > 0
    dead = a.group_by("token").agg((pl.col("volume").tail(30) == 0).all().alias("dead"))["dead"].sum()
    assert dead > 0  # some tokens end in a flat zero-volume tail


def test_cli_data_info_and_synth(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    runner = CliRunner()
    assert (
        runner.invoke(
            cli, ["data", "synth", "--tokens", "3", "--minutes", "120", "--out", str(out)]
        ).exit_code
        == 0
    )
    res = runner.invoke(cli, ["data", "info", str(out)])
    assert res.exit_code == 0
    assert "tokens          3" in res.output
    assert "interval        1 min" in res.output
    assert np.isfinite(pl.read_parquet(out)["close"].to_numpy()).all()


@pytest.mark.parametrize("order", ["sorted", "shuffled", "one_pair_swapped", "reversed"])
def test_validation_sorts_by_token_then_time_whatever_the_input_order(order: str) -> None:
    """Rows already in order skip the sort, any other order is sorted; a repeated bar is dropped anyway."""
    market = synth_market(4, 50, seed=3)
    want, _ = validate_bars(market)
    frame = pl.concat([market, market.slice(10, 3)])  # three bars repeated, right after the originals
    frame = {
        "sorted": frame.sort("token", "ts"),
        "shuffled": frame.sample(fraction=1.0, shuffle=True, seed=1),
        "one_pair_swapped": pl.concat(
            [frame.sort("token", "ts").slice(0, 20)[::-1], frame.sort("token", "ts").slice(20)]
        ),
        "reversed": frame.sort("token", "ts", descending=True),
    }[order]
    got, rej = validate_bars(frame)
    assert got.equals(want)
    assert rej.as_dict() == {"duplicate_ts": 3}
