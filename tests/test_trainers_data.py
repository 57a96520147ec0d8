"""Labels, ties, dead tails, categories, embargoed splits, metrics and the leakage guards."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import real_bars
from memed.data import synth_market
from memed.data.cleaning import CleaningRule, categorize, cut_dead_tails
from memed.data.gaps import GapRule
from memed.features import build_spec, compute_features
from memed.trainers.labels import add_labels, usable_horizons
from memed.trainers.leakage import check_lookahead, check_start_invariance, constant_features
from memed.trainers.metrics import baseline_probabilities, binary_metrics, roc_auc
from memed.trainers.splits import assign_splits, embargo_violations

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _frame(token: str, minutes: list[int], closes: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {"token": token, "ts": [T0 + timedelta(minutes=m) for m in minutes], "close": closes},
        schema={"token": pl.String, "ts": pl.Datetime("us", "UTC"), "close": pl.Float64},
    )


def test_labels_ties_gaps_and_end_of_data() -> None:
    f = _frame("A", [0, 1, 2, 5, 6], [1.0, 2.0, 2.0, 3.0, 1.0])
    out = add_labels(f, [1, 2], "exclude")
    # y_1: 0->1 up; 1->2 tie (null); 2->3: no bar at 3, price stands at 2.0 -> tie; 5->6 down; 6: past end
    assert out["y_1"].to_list() == [1.0, None, None, 0.0, None]
    # y_2: 0->2 up; 1->3 (stands 2.0) tie; 2->4 tie; 5->7 past end; 6 past end
    assert out["y_2"].to_list() == [1.0, None, None, None, None]
    down = add_labels(f, [1], "down")
    assert down["y_1"].to_list() == [1.0, 0.0, 0.0, 0.0, None]
    assert out["past_1"][0] is None
    assert out["past_1"][1] == pytest.approx(np.log(2.0))


def test_labels_never_cross_tokens() -> None:
    f = pl.concat([_frame("A", [0, 1], [1.0, 1.0]), _frame("B", [0, 1, 2], [5.0, 6.0, 7.0])])
    out = add_labels(f, [1], "exclude")
    assert out.filter(pl.col("token") == "A")["y_1"].to_list() == [None, None]
    assert out.filter(pl.col("token") == "B")["y_1"].to_list() == [1.0, 1.0, None]


def test_hourly_sets_have_no_sub_hour_horizons() -> None:
    assert usable_horizons((15, 30, 60, 120, 720), 60) == [60, 120, 720]
    assert usable_horizons((15, 30), 1) == [15, 30]


def test_dead_tail_is_cut_keeping_two_bars() -> None:
    closes = [1.0, 1.1, 1.2] + [1.3] * 100
    f = _frame("A", list(range(103)), closes)
    kept, cut = cut_dead_tails(f, CleaningRule(dead_tail_minutes=60, dead_tail_keep=2))
    assert cut == 98
    assert kept["close"].to_list() == [1.0, 1.1, 1.2, 1.3, 1.3]
    short = _frame("B", list(range(30)), [1.0] * 30)
    assert cut_dead_tails(short, CleaningRule())[1] == 0  # 29 minutes flat: not dead yet


def test_categories_are_exclusive_with_their_hierarchy() -> None:
    normal = _frame("normal", list(range(200)), list(1.0 + 0.01 * np.sin(np.arange(200))))
    extreme = _frame("extremes", list(range(200)), [1.0] * 100 + [5.0] + [1.0 + 0.01 * i for i in range(99)])
    dead = _frame("dead", list(range(200)), [1.0 + 0.01 * i for i in range(100)] + [2.0] * 100)
    gappy = _frame("gaps", [i * 3 for i in range(200)], [1.0] * 100 + [9.0] + [1.0] * 99)  # extreme too
    bars = pl.concat([normal, extreme, dead, gappy])
    table = categorize(bars, CleaningRule(), GapRule(1, 15))
    got = dict(zip(table["token"].to_list(), table["category"].cast(pl.String).to_list(), strict=True))
    assert got == {"normal": "normal", "extremes": "extremes", "dead": "dead", "gaps": "gaps"}


def test_temporal_split_has_an_embargo_and_the_check_catches_its_absence() -> None:
    bars = _staggered(6, 4000, seed=3)
    keys = bars.select("token", "ts")
    good = assign_splits(keys, embargo_minutes=240)
    assert embargo_violations(keys, good, 240) == 0
    assert set(good.drop_nulls().unique().to_list()) == {"train", "val", "test"}
    leaky = assign_splits(keys, embargo_minutes=0)
    assert embargo_violations(keys, leaky, 240) > 0


def _staggered(tokens: int, minutes: int, seed: int) -> pl.DataFrame:
    """Tokens that live at different times, as memes do: each lives 40 % of the span, the later ones
    listed later (a per-token cut interleaves them: late tokens' training rows lie after early tokens'
    test rows)."""
    bars = synth_market(tokens, minutes, seed=seed)
    offset = pl.col("token").rank("dense") * (minutes * 3 // (5 * tokens))
    alive = pl.col("ts").min() + pl.duration(minutes=offset)
    life = pl.duration(minutes=minutes * 2 // 5)
    return bars.filter((pl.col("ts") >= alive) & (pl.col("ts") < alive + life))


@pytest.mark.parametrize("strategy", ["temporal", "token", "mixed"])
def test_every_split_strategy_cuts_one_calendar(strategy: str) -> None:
    """No training or validation row's label window (t + the longest horizon) reaches the earliest test
    row, nor a training one the earliest validation row, whatever the strategy, on tokens that live at
    different times."""
    keys = _staggered(30, 2000, seed=5).select("token", "ts")
    split = assign_splits(keys, strategy=strategy, embargo_minutes=120, holdout_tokens=0.3, seed=2)  # type: ignore[arg-type]
    parts = keys.with_columns(split.alias("s")).drop_nulls("s")
    first = dict(parts.group_by("s").agg(pl.col("ts").min()).iter_rows())
    last = dict(parts.group_by("s").agg(pl.col("ts").max()).iter_rows())
    assert set(first) == {"train", "val", "test"}
    h = timedelta(minutes=120)
    assert last["train"] + h < first["val"]
    assert last["val"] + h < first["test"]
    assert embargo_violations(keys, split, 120) == 0
    if strategy == "token":  # whole tokens per part
        assert parts.group_by("token").agg(pl.col("s").n_unique())["s"].max() == 1
    if strategy == "mixed":  # some tokens are only ever test tokens
        only_test = parts.group_by("token").agg((pl.col("s") == "test").all())
        assert 0 < only_test["s"].sum() < 30


def test_auc_equals_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.4).astype(float)
    p = np.round(rng.random(300) + 0.3 * y, 1)  # many tied scores
    pos, neg = p[y == 1], p[y == 0]
    pairwise = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert roc_auc(y, p) == pytest.approx(pairwise, abs=1e-12)


def test_metrics_drop_unlabelled_rows_and_baselines_behave() -> None:
    y = np.array([1.0, 0.0, np.nan, 1.0])
    m = binary_metrics(y, np.array([0.9, 0.1, 0.5, 0.2]))
    assert m["n"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3)
    base = baseline_probabilities(np.array([0.1, -0.2, 0.0, np.nan]), 0.47)
    assert base["persistence"].tolist() == [1.0, 0.0, 0.5, 0.5]
    assert base["reversal"].tolist() == [0.0, 1.0, 0.5, 0.5]
    assert binary_metrics(np.array([1.0, 0.0]), base["majority"][:2])["roc_auc"] == 0.5


def test_lookahead_guard_passes_the_engine_and_catches_a_planted_peek() -> None:
    bars = real_bars("freqtrade-gaps").head(3000)
    spec = build_spec(1, 15)
    assert check_lookahead(bars, lambda b: compute_features(b, spec), cuts=5).ok

    def peeking(b: pl.DataFrame) -> pl.DataFrame:
        return compute_features(b, spec).with_columns(peek=pl.col("rsi_14").shift(-3).over("token"))

    report = check_lookahead(bars, peeking, cuts=5)
    assert not report.ok
    assert set(report.violations) == {"peek"}


@pytest.mark.parametrize(
    ("dataset", "interval", "rows"),
    [("binance-futures-1m", 1, 6000), ("freqtrade-gaps", 1, 6000), ("binance-spot-5m", 5, 3000)],
)
def test_no_feature_depends_on_where_history_starts(dataset: str, interval: int, rows: int) -> None:
    """Cutting the *past* (what a freshly started daemon lacks) an hour and a day: past the spec's
    warm-up every feature agrees to 1e-6 on real data -- window features exactly, the seeded averages
    (Wilder RSI and ATR, MACD's EMAs) because the warm-up covers their convergence horizon."""
    bars = real_bars(dataset).group_by("token", maintain_order=True).head(rows)
    spec = build_spec(interval, 15 if interval == 1 else 30)
    report = check_start_invariance(bars, lambda b: compute_features(b, spec, with_ready=True))
    assert report.rows_checked > 5_000
    assert report.ok, report.drift


def test_start_truncation_finds_what_depends_on_where_history_starts() -> None:
    """The check is not blind: with the warm-up of the window features only (65 bars), the seeded averages
    differ after a cut and agree again no later than the convergence horizon the spec states for them; a
    planted dataset clock never agrees."""
    bars = real_bars("binance-futures-1m").group_by("token", maintain_order=True).head(6000)
    spec = build_spec(1, 15)
    horizon = {f.name: f.warmup for f in spec.features}

    short = spec.with_warmup_at_most(65)
    assert short.warmup_bars == 65
    report = check_start_invariance(bars, lambda b: compute_features(b, short, with_ready=True), cuts=(60,))
    seeded = {"rsi_9", "rsi_14", "atr_pct_14", "macd_pct", "macd_signal_pct", "macd_hist_pct"}
    assert set(report.drift) == seeded, set(report.drift) ^ seeded
    for name, d in report.drift.items():
        assert 65 < d.bars_to_agree <= horizon[name], (name, d, horizon[name])

    def planted(b: pl.DataFrame) -> pl.DataFrame:
        clock = (pl.col("ts") - pl.col("ts").min()).dt.total_minutes().cast(pl.Float64)
        return compute_features(b, spec, with_ready=True).select("token", "ts", "ready", "logret_15m",
                                                                 clock.alias("clock"))  # fmt: skip

    planted_report = check_start_invariance(bars, planted, cuts=(60, 1440))
    assert set(planted_report.drift) == {"clock"}
    assert planted_report.drift["clock"].bars_to_agree == -1


def test_constant_feature_check() -> None:
    f = pl.DataFrame({"a": [1.0, 1.0, None], "b": [None, None, None], "c": [1.0, 2.0, 3.0]},
                     schema={"a": pl.Float64, "b": pl.Float64, "c": pl.Float64})  # fmt: skip
    assert constant_features(f, ["a", "b", "c"]) == ["a", "b"]


def test_batch_ready_flag_equals_streaming_ready() -> None:
    from memed.features import FeatureStream

    bars = real_bars("pumpfun-hourly").head(4000)
    spec = build_spec(60, 180)
    batch = compute_features(bars, spec, with_ready=True)
    stream = FeatureStream(spec)
    ready: list[bool] = []
    for row in bars.sort("ts", "token").iter_slices(1):
        ready.extend(stream.update(row).ready.tolist())
    by_time = bars.sort("ts", "token").select("token", "ts").with_columns(pl.Series("r", ready))
    joined = batch.join(by_time, on=["token", "ts"])
    assert joined.height == bars.height
    assert (joined["ready"] == joined["r"]).all()


def test_memed_check_start_names_the_start_dependent_features(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from memed.cli.main import cli
    from memed.data import write_dataset

    path = tmp_path / "m.parquet"
    write_dataset(synth_market(3, 900, seed=9), path)
    ok = CliRunner().invoke(cli, ["check", "start", str(path), "--cuts", "30"])
    assert ok.exit_code == 0, ok.output
    assert "compared past the 304-bar warm-up" in ok.output
    res = CliRunner().invoke(cli, ["check", "start", str(path), "--cuts", "30", "--warmup", "40"])
    assert res.exit_code == 2
    assert "START-DEPENDENT macd_pct" in res.output  # seeded at the first bar: converges
    assert "agrees after" in res.output
    assert "agrees never" not in res.output
    assert "start-truncation check failed" in res.output
    bad = CliRunner().invoke(cli, ["check", "start", str(path), "--cuts", "an hour"])
    assert bad.exit_code == 2
    assert "--cuts" in bad.output


def test_calendar_cuts_follow_the_rows_not_the_span() -> None:
    """A 2017 file beside a 2026 one: cutting the span would put every 2026 row in the test part and
    leave validation empty; the cuts lie where 60 % and 80 % of all rows lie."""
    old = synth_market(1, 500, seed=1).with_columns(
        pl.lit("OLD").alias("token"), pl.col("ts").dt.offset_by("-9y")
    )
    new = synth_market(2, 2000, seed=2)
    keys = pl.concat([old, new]).select("token", "ts")
    split = assign_splits(keys, embargo_minutes=60)
    counts = dict(keys.with_columns(split.alias("s")).group_by("s").len().iter_rows())
    assert counts["train"] > counts["val"] > 0
    assert counts["test"] > 0
    assert embargo_violations(keys, split, 60) == 0


def test_a_history_shorter_than_the_warm_up_is_refused_with_the_reason(tmp_path: Path) -> None:
    """Tokens that never reach the seeded averages' convergence horizon: a clear error, not an empty set."""
    from memed.config import parse_config
    from memed.data import write_dataset
    from memed.errors import DataError
    from memed.trainers.dataset import build_training_data

    path = tmp_path / "short.parquet"
    write_dataset(synth_market(3, 200, seed=1), path)
    with pytest.raises(DataError, match=r"no token reaches the feature warm-up of 304 bars .* 3 tokens"):
        build_training_data([path], parse_config(""))
