"""Delayed-label scoring: the labels the stream resolves minute by minute are exactly the trainer's
labels of the same bars, and the scores are the textbook ones."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from pathlib import Path

import aiohttp
import msgspec
import numpy as np
import polars as pl
import pytest

from broker import Mosquitto
from daemon_helpers import collect, daemon_config, last_minute, wait_until, waited
from memed.config import MemedConfig
from memed.daemon.app import Daemon
from memed.daemon.publish_dataset import publish_dataset
from memed.data import bar_matrix, epoch_minutes, random_walk_market, run_bounds, synth_market
from memed.decision import DecisionPath, Decisions
from memed.models.registry import load_model_set
from memed.monitor.drift import DriftAlarms
from memed.monitor.labels import DelayedLabels, Resolved
from memed.monitor.psi import FeatureDrift, PsiAlarm
from memed.monitor.scores import ScoreBoard, window_scores
from memed.monitor.stream import ScoreStream, Snapshot, score_history, score_signals
from memed.trainers.labels import add_labels, fwd_col, label_col


def gappy_market() -> pl.DataFrame:
    """Five tokens, 10 % of their bars missing at random and one token silent for 40 minutes."""
    market = synth_market(5, 900, seed=3)
    rng = np.random.default_rng(1)
    keep = rng.random(market.height) > 0.1
    start = market["ts"].min()
    silent = (pl.col("token") == market["token"][0]) & pl.col("ts").is_between(
        start + pl.duration(minutes=400), start + pl.duration(minutes=440)
    )
    return market.filter(pl.Series(keep)).filter(~silent)


@pytest.mark.parametrize("ties", ["exclude", "down"])
def test_resolved_labels_are_the_trainers(tiny_registry: Path, ties: str) -> None:
    market = gappy_market()
    cfg = MemedConfig()
    signals = msgspec.structs.replace(cfg.signals, models=("logreg", "lgbm", "xgb"))
    path = DecisionPath(load_model_set(tiny_registry), signals, cfg.risk)
    dec = path.process_history(market)
    names = sorted(dec.members)
    assert len(names) >= 2
    labels = DelayedLabels(dec.horizons, ties=ties, members=len(names))  # type: ignore[arg-type]
    minutes = dec.ts_minutes.astype(np.int64)
    tokens = dec.tokens.to_list()
    unit = (
        0.02 * dec.close
    )  # every row a BUY risking 2 % of its close: R = (close(t+h) / close(t) - 1) / 0.02
    mp = np.stack([dec.members[m] for m in names], axis=2)
    got: dict[int, list[Resolved]] = {h: [] for h in dec.horizons}
    cuts = np.r_[0, np.flatnonzero(np.diff(minutes)) + 1, len(minutes)]
    for a, b in itertools.pairwise(cuts.tolist()):
        for r in labels.update(tokens[a:b], int(minutes[a]), dec.close[a:b], dec.horizon_p[a:b],
                               np.ones(b - a, bool), unit[a:b], mp[a:b]):  # fmt: skip
            got[r.horizon].append(r)
    served = pl.DataFrame({"token": dec.tokens, "ts_m": dec.ts_minutes.astype(np.int64)}).with_columns(
        **{f"p_{h}": dec.horizon_p[:, k] for k, h in enumerate(dec.horizons)},
        **{f"m_{m}_{h}": dec.members[m][:, k] for m in names for k, h in enumerate(dec.horizons)},
    )
    labelled = add_labels(market.select("token", "ts", "open", "high", "low", "close"), list(dec.horizons),
                          ties).with_columns(ts_m=pl.col("ts").dt.epoch("s") // 60)  # type: ignore[arg-type]  # fmt: skip
    joined = served.join(labelled, on=["token", "ts_m"])
    for h in dec.horizons:
        want = joined.filter(pl.col(f"p_{h}").is_not_nan() & pl.col(label_col(h)).is_not_null())
        got_p = np.concatenate([r.p for r in got[h]] or [np.empty(0)])
        got_y = np.concatenate([r.y for r in got[h]] or [np.empty(0)])
        got_m = np.concatenate([r.members for r in got[h] if r.members is not None])
        got_r = np.concatenate([r.r for r in got[h] if r.r is not None])
        assert len(got_p) == want.height > 0, h
        wp, wy = want[f"p_{h}"].to_numpy(), want[label_col(h)].to_numpy()
        wm = np.column_stack([want[f"m_{m}_{h}"].to_numpy() for m in names])
        wr = (np.exp(want[fwd_col(h)].to_numpy()) - 1) / 0.02
        a = np.lexsort((got_r, *got_m.T, got_y, got_p))  # rows alike in p, y and members: by R
        b = np.lexsort((wr, *wm.T, wy, wp))
        assert np.array_equal(got_p[a], wp[b])
        assert np.array_equal(got_y[a], wy[b])
        assert np.array_equal(got_m[a], wm[b], equal_nan=True)
        assert got_r[a] == pytest.approx(wr[b], rel=1e-9, abs=1e-9)


def test_scores_are_the_textbook_ones() -> None:
    rng = np.random.default_rng(0)
    p = np.round(rng.random(300), 2)  # ties in p
    y = (rng.random(300) < p).astype(float)
    up, down = p[y == 1][:, None], p[y == 0][None, :]
    pairs = (up > down) + 0.5 * (up == down)  # every (up, down) pair: the AUC's definition
    s = window_scores(p, y, p > 0.8)
    assert s["auc"] == pytest.approx(np.mean(pairs), abs=1e-12)  # exact: p on a 0.01 grid, bins of 0.001
    assert s["brier"] == pytest.approx(np.mean((p - y) ** 2))
    q = np.clip(p, 1e-15, 1 - 1e-15)
    assert s["log_loss"] == pytest.approx(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
    assert sum(b["n"] for b in s["reliability"]) == 300
    assert s["buy_hit_rate"] == pytest.approx(y[p > 0.8].mean())
    rm = rng.normal(0.0, 1.0, 300)
    with_r = ScoreBoard((60,), window_minutes=60, every_minutes=60, members=("a",))
    with_r.add(60, [Resolved(60, p, y, p > 0.8, np.column_stack([1 - p]), np.where(p > 0.8, rm, np.nan))])
    scored = with_r.scores()["60"]
    assert scored["buy_r_mean"] == pytest.approx(rm[p > 0.8].mean())
    assert scored["members"]["a"]["auc"] == pytest.approx(1 - s["auc"], abs=1e-12)  # the mirror image
    assert scored["members"]["a"]["n"] == 300
    assert np.isnan(window_scores(p, np.ones(300), p > 0.8)["auc"])
    # the window adds up bucket sums: two halves give what the whole does
    board = ScoreBoard((60,), window_minutes=120, every_minutes=60)
    board.add(60, [Resolved(60, p[:150], y[:150], p[:150] > 0.8)])
    board.add(61, [Resolved(60, p[150:], y[150:], p[150:] > 0.8)])
    both = board.scores()["60"]
    assert both["auc"] == pytest.approx(s["auc"], abs=1e-12)
    assert both["log_loss"] == pytest.approx(s["log_loss"], rel=1e-12)
    board.add(241, [])  # two buckets later: the window has moved past both
    assert board.scores()["60"]["n"] == 0


@pytest.mark.broker
async def test_the_daemon_and_the_replay_score_alike(
    tiny_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A market fed to a real daemon over Mosquitto and the backtester's replay driver over the same bars:
    the same scores at the same minutes (published on the monitor topic, and on /monitor)."""
    market = gappy_market().filter(pl.col("ts") < pl.col("ts").min() + pl.duration(minutes=600))
    cfg = daemon_config(
        tiny_registry, mosquitto.url, tmp_path, queue_minutes=100_000, close_on_expected=False
    )
    cfg = msgspec.structs.replace(cfg, monitor=msgspec.structs.replace(cfg.monitor, every_minutes=30))
    daemon = Daemon(cfg)
    published: list[bytes] = []
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        sub = tg.create_task(collect(mosquitto.port, cfg.monitor.topic, published, ready))
        await waited(ready, "the test's subscriber")
        run = tg.create_task(daemon.run())
        await waited(daemon.subscribed, "the daemon to subscribe")
        await publish_dataset(market, mosquitto.url, batch=True)
        await wait_until(lambda: daemon.batcher.last_closed >= last_minute(market), timeout=120)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{daemon.http_port}/monitor") as resp,
        ):
            served = await resp.json()
        daemon.stop()
        await run
        await wait_until(lambda: len(published) >= 18)
        sub.cancel()
    path = DecisionPath(load_model_set(tiny_registry), cfg.signals, cfg.risk)
    dec = path.process_history(market)
    replay = score_history(dec, ScoreStream(dec.horizons, window_minutes=cfg.monitor.window_minutes,
                                            every_minutes=30, ties=cfg.train.ties,
                                            members=tuple(sorted(dec.members))))  # fmt: skip
    live = [msgspec.json.decode(b) for b in published]
    assert [d["minute"] for d in live] == [s.minute for s in replay]
    assert len(replay) >= 18
    for d, s in zip(live, replay, strict=True):
        want = msgspec.json.decode(msgspec.json.encode(s.scores))  # NaN → null, as on the wire
        assert d["horizons"] == want
    assert served["minute"] == replay[-1].minute
    assert served["horizons"] == msgspec.json.decode(msgspec.json.encode(replay[-1].scores))
    text = daemon.metrics.render().decode()
    assert 'memed_live_auc{horizon="60"}' in text


def test_the_backtest_writes_the_scores_the_daemon_would_have_published(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from conftest import data_folder
    from memed.cli.main import cli

    folder = data_folder("binance-futures-1m")
    packaged = Path(__file__).parents[1] / "src" / "memed" / "demo_models"
    config = tmp_path / "short.toml"
    config.write_text("[backtest]\ntrain_minutes = 1440\ntest_minutes = 1440\nstep_minutes = 1440\n"
                      '[signals]\nmodels = ["logreg", "lgbm", "xgb", "lstm"]\n')  # fmt: skip
    out = tmp_path / "bt"
    args = ["backtest", "--data", str(folder), "--models", str(packaged), "--out", str(out), "--timerange",
            "20260201-20260205", "--allow-in-sample", "--config", str(config)]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    snaps = msgspec.json.decode((out / "monitor.json").read_bytes())
    signals = pl.read_parquet(out / "signals.parquet")
    horizons = tuple(int(c[2:]) for c in signals.columns if c.startswith("p_") and c[2:].isdigit())
    members = ("lgbm", "logreg", "lstm", "xgb")  # the packaged set's, each with its own columns
    assert all(f"m_{m}_{h}" in signals.columns for m in members for h in horizons)
    again = score_signals(
        signals, ScoreStream(horizons, window_minutes=1440, every_minutes=60, members=members)
    )
    assert [s["minute"] for s in snaps] == [s.minute for s in again]
    assert all(s["minute"] % 60 == 0 for s in snaps)
    last = snaps[-1]["horizons"]
    assert last["60"]["n"] > 1000
    assert 0.0 < last["60"]["auc"] < 1.0
    assert msgspec.json.encode([s["horizons"] for s in snaps]) == msgspec.json.encode(
        [msgspec.json.decode(msgspec.json.encode(s.scores)) for s in again]
    )
    assert set(last["60"]["members"]) == set(members)
    assert all(0.0 < m["auc"] < 1.0 and m["n"] > 1000 for m in last["60"]["members"].values())


def labels_stream(
    seed: int, minutes: int, flip_at: int | None = None, per: int = 50, h: int = 15
) -> DriftAlarms:
    """Calibrated p_up (labels drawn with it), or from ``flip_at`` on labels drawn with 1 - p_up: a model
    that turned upside down."""
    rng = np.random.default_rng(seed)
    alarms = DriftAlarms((h,))
    for m in range(minutes):
        p = rng.uniform(0.3, 0.7, per)
        q = p if flip_at is None or m < flip_at else 1 - p
        y = (rng.random(per) < q).astype(float)
        alarms.add(m, [Resolved(h, p, y, np.zeros(per, bool))])
    return alarms


def test_drift_alarms_fire_on_a_broken_model_and_stay_quiet_otherwise(tiny_registry: Path) -> None:
    # the false-alarm budget: none in 5 x 5,000 stationary minutes (15-minute horizon, 50 labels a minute)
    assert [len(labels_stream(seed, 5000).alarms) for seed in range(5)] == [0] * 5
    # a model that turns upside down at minute 1,500 is caught within 450 minutes (30 blocks), both ways
    for seed in range(3):
        alarms = labels_stream(100 + seed, 3000, flip_at=1500).alarms
        assert {a.kind for a in alarms} == {"log_loss", "error"}
        assert all(1500 < a.minute <= 1950 for a in alarms)
        assert all(a.after > a.before for a in alarms)
    # the real decision path on driftless random walks: no alarm at any horizon
    cfg = MemedConfig()
    path = DecisionPath(load_model_set(tiny_registry), cfg.signals, cfg.risk)
    dec = path.process_history(random_walk_market(20, 3000, seed=1))
    stream = ScoreStream(dec.horizons, window_minutes=1440, every_minutes=60)
    score_history(dec, stream)
    assert stream.board.labelled[dec.horizons[0]] > 10_000
    assert stream.drift.alarms == []


def rows(dec: Decisions, a: int, b: int) -> Decisions:
    """The decisions of rows [a, b) (what the scoring stream reads of them)."""
    cut = {k: getattr(dec, k)[a:b] for k in ("tokens", "ts_minutes", "close", "horizon_p", "action", "side")}
    return dataclasses.replace(dec, **cut)


def test_the_scoring_stream_restores_exactly(tiny_registry: Path) -> None:
    """Cut a replay in two and go on from a snapshot of the stream: the same scores and alarms."""
    cfg = MemedConfig()
    path = DecisionPath(load_model_set(tiny_registry), cfg.signals, cfg.risk)
    dec = path.process_history(gappy_market())
    whole = ScoreStream(dec.horizons, window_minutes=600, every_minutes=60)
    want = score_history(dec, whole)
    cut = int(np.searchsorted(dec.ts_minutes, dec.ts_minutes[len(dec) // 2]))
    first = ScoreStream(dec.horizons, window_minutes=600, every_minutes=60)
    head = score_history(rows(dec, 0, cut), first)
    second = ScoreStream(dec.horizons, window_minutes=600, every_minutes=60)
    assert second.restore(first.snapshot())
    tail = score_history(rows(dec, cut, len(dec)), second)

    def wire(snaps: list[Snapshot]) -> bytes:  # NaN (no AUC without both classes) as null, comparable
        return msgspec.json.encode([(s.minute, s.scores, s.alarms) for s in snaps])

    assert wire(head + tail) == wire(want)
    assert len(want) > 10


def psi_alarms(registry: Path, market: pl.DataFrame) -> list[PsiAlarm]:
    """The daemon's decision path minute by minute, its served rows into the feature drift check."""
    ms = load_model_set(registry)
    cfg = MemedConfig()
    path = DecisionPath(ms, cfg.signals, cfg.risk)
    assert ms.manifest.reference is not None
    check = FeatureDrift(ms.manifest.reference, ms.manifest.feature_names, ms.manifest.horizons, 60)
    bars = market.sort("ts", "token")
    ts, x, tokens = epoch_minutes(bars["ts"]), bar_matrix(bars), bars["token"].to_list()
    out = []
    for a, b in itertools.pairwise(run_bounds(ts)):
        d = path.process(tokens[a:b], float(ts[a]), np.ascontiguousarray(x[:, a:b]))
        out += check.step(int(ts[a]), d.tokens.to_list(), d.features, d.ready, d.horizon_p)
    return out


def amplified(market: pl.DataFrame, factor: float, from_minute: int) -> pl.DataFrame:
    """Each token's log returns times ``factor`` from ``from_minute`` on (a volatility regime change)."""
    parts = []
    for _, g in market.sort("token", "ts").group_by("token", maintain_order=True):
        c = g["close"].to_numpy()
        lr = np.diff(np.log(c), prepend=np.log(c[0]))
        lr[from_minute:] *= factor
        ratio = np.exp(np.cumsum(lr)) * c[0] / c
        parts.append(g.with_columns(pl.col(k) * ratio for k in ("open", "high", "low", "close")))
    return pl.concat(parts)


def test_feature_drift_fires_on_a_volatility_break_and_not_on_the_same_market(walk_registry: Path) -> None:
    # the budget: no alarm in 3 x 25 hours of 30 other random-walk tokens, 46 features and 3 p_up
    for seed in (3, 5, 11):
        assert psi_alarms(walk_registry, random_walk_market(30, 1500, seed=seed)) == []
    # volatility x4 from minute 750: the first bucket judged after it (minute 781) raises it
    market = random_walk_market(30, 1500, seed=11)
    start = int(market["ts"].min().timestamp() // 60)  # type: ignore[union-attr]
    alarms = psi_alarms(walk_registry, amplified(market, 4.0, 750))
    assert alarms
    assert min(a.minute for a in alarms) - start <= 781
    assert all(a.minute - start > 750 for a in alarms)
    names = {a.name for a in alarms}
    assert {"ret_std_15m", "atr_pct_14"} & names
    assert all(a.psi > a.threshold >= 0.25 for a in alarms)


def test_psi_and_its_threshold() -> None:
    from memed.monitor.psi import chi2_quantile, psi, threshold
    from memed.monitor.reference import reference_bins

    assert chi2_quantile(0.95, 9) == pytest.approx(16.919, abs=0.05)  # the table's value
    assert chi2_quantile(0.999, 9) == pytest.approx(27.877, rel=0.01)  # Wilson-Hilferty: within 1 %
    rng = np.random.default_rng(0)
    ref = reference_bins(rng.normal(0, 1, 100_000))
    assert ref is not None
    assert len(ref.edges) == 9
    same = np.mean([psi(rng.normal(0, 1, 500), ref) for _ in range(200)])
    assert same < threshold(500, 10, 1)  # sampling noise stays under the line
    assert same == pytest.approx(9 / 500, rel=0.3)  # N x PSI ~ chi-square(9): mean 9 / N
    assert psi(rng.normal(0, 2, 500), ref) > 0.25  # a doubled spread is a major shift
    assert threshold(20, 10, 49) > 1.0  # twenty tokens prove little
    assert threshold(100_000, 10, 49) == 0.25  # many tokens: the conventional floor
    assert reference_bins(np.ones(1000)) is None


def test_a_sampled_share_of_tokens_is_scored(tiny_registry: Path) -> None:
    """`monitor.sample_share`: the tokens whose name hashes below the share, the same ones every time."""
    import zlib

    cfg = MemedConfig()
    market = synth_market(40, 600, seed=2)
    dec = DecisionPath(load_model_set(tiny_registry), cfg.signals, cfg.risk).process_history(market)
    full = ScoreStream(dec.horizons, window_minutes=600, every_minutes=60)
    half = ScoreStream(dec.horizons, window_minutes=600, every_minutes=60, sample_share=0.5)
    score_history(dec, full)
    score_history(dec, half)
    want = {t for t in market["token"].unique().to_list() if zlib.crc32(t.encode()) < 2**31}
    assert set(half.labels.index) == want
    assert 0 < len(want) < 40
    assert set(full.labels.index) == set(market["token"].unique().to_list())
    h = dec.horizons[0]
    assert 0 < half.board.labelled[h] < full.board.labelled[h]
