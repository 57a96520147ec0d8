"""`memed features compute`: token groups streamed through the kernel into Parquet give exactly the
whole-frame computation, in float32 too, whatever the group size; invalid rows are counted, not written."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from memed.cli.main import cli
from memed.data import load_dataset, synth_market, write_dataset
from memed.data.groups import file_groups, frame_groups
from memed.data.select import Selection
from memed.features import build_spec, compute_features
from memed.features.batch import TILE
from memed.features.export import FREE_WORDS, _runs, export_features


def compute(*args: str) -> str:
    res = CliRunner().invoke(cli, ["features", "compute", *args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize(
    ("group_rows", "in_order"), [(1_000, False), (2_500, False), (2_500, True), (10**6, True)]
)
def test_streamed_features_equal_the_whole_frame(tmp_path: Path, group_rows: int, in_order: bool) -> None:
    """Read by token filter (rows out of order: the bad ones come last) or by row ranges (in order)."""
    market = synth_market(9, 700, seed=2)
    bad = market.head(3).with_columns(high=pl.col("low") / 2, ts=pl.col("ts") - pl.duration(days=30))
    rows = pl.concat([market, bad])
    write_dataset(rows.sort("token", "ts") if in_order else rows, tmp_path / "m.parquet")
    want = compute_features(market, build_spec(1))
    out = compute(str(tmp_path / "m.parquet"), "--out", str(tmp_path / "f.parquet"), "--group-rows",
                  str(group_rows))  # fmt: skip
    got = pl.read_parquet(tmp_path / "f.parquet")
    assert got.equals(want)  # every value, the warm-up nulls included
    groups = int(out.split(" token groups")[0].rsplit("(batch, ", 1)[1])
    tokens = market["token"].n_unique()
    assert groups == 1 if group_rows >= market.height else -(-market.height // group_rows) <= groups <= tokens
    assert "dropped 3 invalid rows: {'high_below_low': 3}" in out
    compute(str(tmp_path / "m.parquet"), "--out", str(tmp_path / "f32.parquet"), "--float32", "--threads=3")
    f32 = pl.read_parquet(tmp_path / "f32.parquet")
    assert f32.schema[want.columns[-1]] == pl.Float32
    assert f32.equals(want.with_columns(pl.col(c).cast(pl.Float32) for c in want.columns[2:]))


def test_other_inputs_and_the_stream_mode(tmp_path: Path) -> None:
    market = synth_market(4, 500, seed=3)
    write_dataset(market, tmp_path / "in" / "m.parquet")
    want = compute_features(market, build_spec(1))
    compute(str(tmp_path / "in"), "--out", str(tmp_path / "folder.parquet"), "--group-rows", "1000")
    assert pl.read_parquet(tmp_path / "folder.parquet").equals(want)  # a folder: loaded, then grouped
    compute(str(tmp_path / "in" / "m.parquet"), "--out", str(tmp_path / "s.parquet"), "--mode", "stream")
    assert pl.read_parquet(tmp_path / "s.parquet").equals(want)  # the daemon's driver says the same
    with pytest.raises(ValueError, match="no bars"):
        export_features(frame_groups(market.clear(), 100), build_spec(1), tmp_path / "empty.parquet")
    # an older output is replaced (removed, then the finished file renamed into place), nothing left beside
    compute(str(tmp_path / "in" / "m.parquet"), "--out", str(tmp_path / "s.parquet"), "--float32")
    assert pl.read_parquet(tmp_path / "s.parquet").schema[want.columns[-1]] == pl.Float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.parquet", "in", "s.parquet"]


@pytest.mark.parametrize(("float32", "threads"), [(False, 1), (True, 2), (False, 4)])
def test_market_context_columns_are_exported_like_the_whole_frame(tmp_path: Path, float32: bool,
                                                                  threads: int) -> None:  # fmt: skip
    market = synth_market(6, 400, seed=5)  # 2,400 rows: tiles of 64 rows cross tokens, the last one short
    spec = build_spec(1, 15, market=True)
    want = compute_features(market, spec)
    export_features(frame_groups(market, 10**6), spec, tmp_path / "m.parquet", float32=float32,
                    kernel_threads=threads)  # fmt: skip
    got = pl.read_parquet(tmp_path / "m.parquet")
    assert got.columns == want.columns
    assert got.columns[-1].startswith("mkt_")
    cast = pl.Float32 if float32 else pl.Float64
    assert got.equals(want.with_columns(pl.col(c).cast(cast) for c in want.columns[2:]))
    assert got["mkt_beta_60m"].null_count() == want["mkt_beta_60m"].null_count() > 0


def test_a_folder_is_streamed_a_group_of_files_at_a_time(tmp_path: Path) -> None:
    """A token split over two files, bars repeated across files, invalid rows, interleaved token ranges:
    grouped by files, the features equal the whole folder loaded at once, rejections included."""
    market = synth_market(6, 600, seed=7)  # SYN00000 .. SYN00005
    tok = pl.col("token")
    early = pl.col("ts") < market["ts"].min() + pl.duration(minutes=300)
    four = market.filter(tok == "SYN00004")
    parts = {  # SYN00000 split over a and b; c (3 and 5) and d (4) interleave; d repeats 3's first bars
        "a.parquet": market.filter((tok == "SYN00000") & early | (tok == "SYN00001")),
        "b.feather": market.filter((tok == "SYN00000") & ~early | (tok == "SYN00002")),
        "c.parquet": market.filter(tok.is_in(["SYN00003", "SYN00005"])),
        "d.parquet": pl.concat(
            [
                four,
                four.head(2).with_columns(high=pl.col("low") / 2),
                market.filter(tok == "SYN00003").head(4),
            ]
        ),
    }
    folder = tmp_path / "in"
    folder.mkdir()
    for name, frame in parts.items():
        (frame.write_ipc if name.endswith(".feather") else frame.write_parquet)(folder / name)
    bars, rejections = load_dataset([folder])
    assert rejections.as_dict() == {"duplicate_ts": 4, "high_below_low": 2}
    seen: list[tuple[int, int]] = []
    plan = file_groups([folder], Selection(), 1000, lambda done, files: seen.append((done, files)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the first pass says how far it is
    assert plan.interval == 1
    assert [sorted(p.name for p in g) for g in plan.groups] == [
        ["a.parquet", "b.feather"],
        ["c.parquet", "d.parquet"],
    ]
    want = compute_features(bars, build_spec(1))
    out = compute(str(folder), "--out", str(tmp_path / "f.parquet"), "--group-rows", "1000")
    assert pl.read_parquet(tmp_path / "f.parquet").equals(want)
    assert "(batch, 2 token groups" in out  # a and b (0-2), c and d (3-5)
    dropped = out.split("dropped 6 invalid rows: ", 1)[1].strip()
    assert ast.literal_eval(dropped) == rejections.as_dict()  # counted once each, as the whole load does


def test_a_folder_mixing_bar_intervals_is_refused_before_any_feature(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    synth_market(2, 300, seed=1).write_parquet(folder / "one.parquet")
    five = synth_market(2, 1500, seed=2).filter(pl.col("ts").dt.minute() % 5 == 0)
    five.with_columns(token=pl.lit("F_") + pl.col("token")).write_parquet(folder / "five.parquet")
    res = CliRunner().invoke(cli, ["features", "compute", str(folder), "--out", str(tmp_path / "f.parquet")])
    assert res.exit_code != 0
    assert "mixed bar intervals" in res.output
    assert not (tmp_path / "f.parquet").exists()


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_row_without_a_token_is_counted_whichever_way_the_file_is_read(tmp_path: Path, where: str) -> None:
    market = synth_market(3, 200, seed=1)
    bad = market.head(1).with_columns(token=pl.lit(None, dtype=pl.String))
    (pl.concat([bad, market]) if where == "first" else pl.concat([market, bad])).write_parquet(
        tmp_path / "m.parquet"
    )
    out = compute(str(tmp_path / "m.parquet"), "--out", str(tmp_path / "f.parquet"), "--group-rows", "1000")
    assert "dropped 1 invalid rows: {'missing_token_or_ts': 1}" in out
    assert pl.read_parquet(tmp_path / "f.parquet").equals(compute_features(market, build_spec(1)))


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 9_000)), min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_a_column_in_runs_holds_the_same_values_and_nulls(pattern: list[tuple[bool, int]]) -> None:
    """Any validity pattern (runs of valid or null rows of any length): the arrays handed to the writer
    concatenate to exactly the column, and exactly the rows of long runs of words without a null (at least
    FREE_WORDS words) go bitmap-free."""
    valid = np.concatenate([np.full(length, ok) for ok, length in pattern])
    n = len(valid)
    values = np.where(valid, np.arange(n, dtype=np.float64), np.nan)
    bits = np.zeros(-(-n // TILE), np.uint64)
    bits.view(np.uint8)[: -(-n // 8)] = np.packbits(valid, bitorder="little")
    runs = _runs(pa.float64(), values, bits)
    assert pa.concat_arrays(runs).equals(pa.array(values, mask=~valid))
    whole = [bool(valid[w : w + TILE].all()) for w in range(0, n, TILE)]
    want, streak = 0, 0
    for w, ok in enumerate([*whole, False]):  # rows of each streak of whole words, long enough
        if ok:
            streak += 1
            continue
        if streak >= FREE_WORDS or streak == len(whole):
            want += min(w * TILE, n) - (w - streak) * TILE
        streak = 0
    assert sum(len(a) for a in runs if a.buffers()[0] is None) == want
