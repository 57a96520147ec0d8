"""The backtester's bulk replay (DecisionPath.process_history) against the daemon's minute loop
(DecisionPath.process), and the parts that make it exact: the LSTM's whole-sequence graph and the runs
over which sequence state is carried."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest

from conftest import TINY_TOML
from memed.backtest.replay import replay_signals, replay_signals_minutewise
from memed.config import MemedConfig, parse_config
from memed.data import synth_market
from memed.data.bars import CLOSE
from memed.data.frames import by_token
from memed.decision import BLOCK_ROWS, DecisionPath
from memed.decision.history import history_rows, plan_blocks, ready_runs, splits_tokens
from memed.features import build_spec
from memed.features.batch import compute_features
from memed.models.registry import ModelSet, load_model_set, resolve
from memed.models.runtime import _providers, run_stateful, session_options, step_stateful
from memed.models.sequence_graph import sequence_form, sequence_session

ALL_MODELS = """
[signals]
policy = "bands"
models = ["logreg", "lgbm", "xgb", "lstm", "transformer"]
decision_horizons = [30, 60]
"""


def _messy_market() -> pl.DataFrame:
    """Synthetic bars with what real feeds do: a long gap that restarts a token's features (and its
    sequence-model state), a short gap that is filled, a frozen close (dead), and duplicated bars with
    other values (the later copies are stale and must be ignored in both replays)."""
    bars = synth_market(6, 1000, seed=11)
    t0 = bars["ts"].min()
    assert t0 is not None
    gap = (pl.col("token") == "SYN00001") & pl.col("ts").is_between(
        t0 + timedelta(minutes=300),
        t0 + timedelta(minutes=380),  # type: ignore[operator]
    )
    short = (pl.col("token") == "SYN00002") & pl.col("ts").is_between(
        t0 + timedelta(minutes=400),
        t0 + timedelta(minutes=405),  # type: ignore[operator]
    )
    bars = bars.filter(~gap & ~short)
    frozen = (pl.col("token") == "SYN00003") & (pl.col("ts") >= t0 + timedelta(minutes=500))  # type: ignore[operator]
    before = (pl.col("token") == "SYN00003") & (pl.col("ts") < t0 + timedelta(minutes=500))  # type: ignore[operator]
    last = bars.filter(before)["close"][-1]
    bars = bars.with_columns(pl.when(frozen).then(pl.lit(last)).otherwise(pl.col("close")).alias("close"))
    dupes = bars.filter(pl.col("token") == "SYN00004").gather_every(37).with_columns(pl.col("close") * 1.5)
    return pl.concat([bars, dupes])


NO_WINDOW_MODELS = """
[signals]
policy = "bands"
models = ["logreg", "lgbm", "xgb", "lstm"]
decision_horizons = [30, 60]
"""

_REFERENCE: dict[str, pl.DataFrame] = {}


def _minute_loop(ms: ModelSet, toml: str, bars: pl.DataFrame) -> pl.DataFrame:
    """The daemon's minute loop over ``bars`` (computed once per model selection)."""
    if toml not in _REFERENCE:
        _REFERENCE[toml] = replay_signals_minutewise(_path(ms, parse_config(TINY_TOML + toml)), bars,
                                                     _whole(bars))  # fmt: skip
    return _REFERENCE[toml]


def _path(ms: ModelSet, cfg: MemedConfig) -> DecisionPath:
    return DecisionPath(ms, cfg.signals, cfg.risk)


def _whole(bars: pl.DataFrame) -> list[tuple[datetime, datetime]]:
    start, end = bars["ts"].min(), bars["ts"].max()
    assert isinstance(start, datetime)
    assert isinstance(end, datetime)
    return [(start, end + timedelta(minutes=1))]


@pytest.mark.parametrize(
    ("toml", "block_rows", "overlap", "splits"),
    [
        (ALL_MODELS, BLOCK_ROWS, True, False),  # one block
        (ALL_MODELS, 500, True, False),  # a window model: blocks of whole tokens
        (NO_WINDOW_MODELS, 256, True, True),  # tokens cut into blocks: kernel and LSTM state carried
        (NO_WINDOW_MODELS, 333, False, True),  # the same, every stage in one thread
    ],
    ids=["one-block", "whole-token-blocks", "split-overlapped", "split-serial"],
)
def test_bulk_replay_equals_the_minute_loop(
    tiny_registry: Path, toml: str, block_rows: int, overlap: bool, splits: bool
) -> None:
    ms = load_model_set(tiny_registry)
    cfg = parse_config(TINY_TOML + toml)
    bars = _messy_market()
    windows = _whole(bars)
    path = _path(ms, cfg)
    assert splits_tokens(path.scorers) == splits
    blocks = plan_blocks(history_rows(bars).starts, block_rows, splits)
    assert (len(blocks) > 1) == (block_rows < BLOCK_ROWS)
    assert any(b.continues for b in blocks) == (splits and block_rows < BLOCK_ROWS)
    slow = _minute_loop(ms, toml, bars)
    fast = replay_signals(path, bars, windows, block_rows=block_rows, overlap=overlap)
    assert fast.columns == slow.columns
    assert fast.height == slow.height == bars.height - bars.select("token", "ts").is_duplicated().sum() // 2
    model_p = {"p_up", "strength"} | {c for c in fast.columns if c.startswith("p_")}
    for col in fast.columns:
        a, b = fast[col], slow[col]
        if col in model_p:
            # ONNX Runtime's kernels may differ in the last bit with the batch size (a one-row matrix
            # product, the tree ensemble's row-parallel path): measured at most 1.1e-16 here
            x, y = a.to_numpy(), b.to_numpy()
            assert np.array_equal(np.isnan(x), np.isnan(y)), col
            assert np.nanmax(np.abs(x - y)) <= 1e-12, col
        elif a.dtype.is_float():  # features, books and the risk plan: bit for bit
            assert np.array_equal(a.to_numpy(), b.to_numpy(), equal_nan=True), col
        else:
            assert a.equals(b), col
    # the replay exercised every case the comparison is meant to cover
    reasons = set(fast["reason"].unique().to_list())
    assert {"", "warming_up", "dead"} <= reasons
    t0 = bars["ts"].min()
    after_gap = fast.filter((pl.col("token") == "SYN00001") & (pl.col("ts") > t0 + timedelta(minutes=380)))  # type: ignore[operator]
    assert (after_gap["reason"] == "warming_up").sum() > 0, "the long gap must restart the token"
    assert after_gap["p_60"].is_not_nan().sum() > 100, "and it must be scored again after its warm-up"
    assert {"BUY", "SELL"} & set(fast["action"].unique().to_list())
    assert fast["p_60"].is_not_nan().sum() > 1000
    assert path.timings["inference"] > 0
    assert path.timings["features"] > 0
    if not overlap:
        assert path.timings["features_wait"] >= path.timings["features"]  # all of it waited for


def test_blocks_cut_rows_and_record_token_continuity() -> None:
    starts = np.array([0, 10, 12, 30])  # tokens of 10, 2 and 18 rows
    cut = plan_blocks(starts, 8, split_tokens=True)
    assert [(b.a, b.b) for b in cut] == [(0, 2), (2, 10), (10, 18), (18, 26), (26, 30)]  # a short first one
    assert [b.bounds.tolist() for b in cut] == [[0, 2], [0, 8], [0, 2, 8], [0, 8], [0, 4]]
    assert [(b.continues, b.open_end) for b in cut] == [(0, 1), (1, 0), (0, 1), (1, 1), (1, 0)]
    whole = plan_blocks(starts, 8, split_tokens=False)
    assert [(b.a, b.b, b.continues, b.open_end) for b in whole] == [(0, 10, 0, 0), (10, 30, 0, 0)]
    assert plan_blocks(np.array([0]), 8, split_tokens=True) == []


def test_frames_are_put_in_token_then_time_order_only_when_needed() -> None:
    bars = synth_market(3, 20, seed=4).sort("token", "ts")
    same, starts = by_token(bars)
    assert same is bars  # already in order: not sorted again
    sizes = bars.group_by("token", maintain_order=True).len()["len"].to_list()
    assert starts.tolist() == np.cumsum([0, *sizes]).tolist()
    shuffled = bars.sample(fraction=1.0, shuffle=True, seed=1)
    fixed, starts2 = by_token(shuffled)
    assert fixed.equals(bars)
    assert starts2.tolist() == starts.tolist()
    swapped = pl.concat([bars.slice(1, 1), bars.slice(0, 1), bars.slice(2)])  # one token's times out of order
    assert by_token(swapped)[0].equals(bars)


def test_stale_bars_are_dropped_as_the_stream_drops_them() -> None:
    bars = synth_market(2, 30, seed=3)
    late = bars.filter(pl.col("token") == "SYN00000").slice(5, 3)  # duplicates and, after row 10, late
    rows = history_rows(pl.concat([bars, late.with_columns(pl.col("close") * 2)]))
    assert rows.stale == 3
    assert len(rows.ts) == bars.height
    # the first copy of each bar is kept
    assert np.array_equal(rows.bars[CLOSE], history_rows(bars).bars[CLOSE])


def test_ready_runs_split_at_tokens_and_unready_bars() -> None:
    ready = np.array([0, 1, 1, 1, 0, 1, 1, 1, 1, 0], dtype=bool)
    starts = np.array([0, 3, 7, 10])  # tokens: rows 0-2, 3-6, 7-9
    assert ready_runs(starts, ready).tolist() == [[1, 3], [3, 4], [5, 7], [7, 9]]
    assert ready_runs(np.array([0, 0]), np.zeros(0, dtype=bool)).shape == (0, 2)


def test_the_lstm_sequence_graph_is_bit_identical_to_stepping(tiny_registry: Path) -> None:
    ms = load_model_set(tiny_registry)
    lstm = ms.runners["lstm"]
    assert lstm.sequence_session() is not None
    feats = compute_features(synth_market(3, 400, seed=5), build_spec(1, 15))
    x = feats.drop("token", "ts").to_numpy()
    seqs = [x[:400], x[400:410], x[410:411], x[411:]]
    for a, b in zip(run_stateful(lstm, seqs), step_stateful(lstm, seqs), strict=True):
        assert np.array_equal(a, b)


def test_a_graph_of_another_shape_falls_back_to_stepping(tiny_registry: Path) -> None:
    root = resolve(tiny_registry)
    ms = load_model_set(root)
    assert sequence_form(onnx.load(str(root / "logreg.onnx"))) is None  # no LSTM, no time axis
    step_model = onnx.load(str(root / "lstm.onnx"))
    for init in step_model.graph.initializer:  # another net: the probe must notice
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) > 1:
            arr = onnx.numpy_helper.to_array(init) * 1.01
            init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
            break
    runner = ms.runners["lstm"]
    assert sequence_session(step_model, runner.session, session_options(1), _providers()) is None
