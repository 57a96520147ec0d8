"""The cost-aware policy: fitted on validation rows, no trade without an edge after costs, and served by
the decision path when ``signals.policy = "cost_aware"``."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest
import structlog

from memed.config import RiskConfig, SignalsConfig
from memed.decision.decide import Decider
from memed.models.manifest import EdgeFit
from memed.models.registry import load_model_set
from memed.signals.policy import A_BUY, A_HOLD, A_SELL, REASONS, SIDES, apply_edge, decide
from memed.trainers.edge import CONFIRM_T, MIN_TRADES, ExitPaths, choose_horizon, confirm, fit_edge, fit_exits


def _moves(p: np.ndarray, rng: np.random.Generator, size: float = 0.01) -> np.ndarray:
    """Forward returns that go up with probability ``p``, by about ``size``."""
    up = rng.random(len(p)) < p
    return np.where(up, 1.0, -1.0) * np.abs(rng.normal(size, size / 3, len(p)))


def test_no_edge_when_the_probability_says_nothing() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.45, 0.55, 50_000)
    fwd = _moves(np.full(len(p), 0.5), rng)  # independent of p
    fit = fit_edge(p, fwd, 60, fee_bps=10, slippage_bps=5, sides="both")
    assert fit.cost == pytest.approx(30e-4)
    assert fit.up_move == pytest.approx(0.01, rel=0.05)
    assert not fit.long_edge
    assert not fit.short_edge
    assert fit.rows == len(p)


def test_an_informative_probability_earns_a_margin_after_costs() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0.2, 0.8, 50_000)
    fwd = _moves(p, rng)
    fit = fit_edge(p, fwd, 60, fee_bps=10, slippage_bps=5, sides="long")
    assert fit.long_edge
    assert fit.long_margin >= 0
    assert fit.long_trades >= MIN_TRADES
    assert fit.long_net_mean > 0
    assert not fit.short_edge  # long-only: the short side is not fitted
    both = fit_edge(p, fwd, 60, fee_bps=10, slippage_bps=5, sides="both")
    assert both.short_edge
    # the realised mean net of the chosen long trades, recomputed by hand
    e = p * fit.up_move - (1 - p) * fit.down_move - fit.cost
    take = e > fit.long_margin
    assert fit.long_net_mean == pytest.approx(float(np.mean(fwd[take] - fit.cost)))


def test_the_policy_holds_with_no_edge_and_trades_past_the_margin() -> None:
    p = np.array([0.9, 0.5, 0.1, 0.9])
    ready = np.array([True, True, True, False])
    none = EdgeFit(horizon=60, cost=0.003, up_move=0.01, down_move=0.01)
    d = decide(p, ready, np.zeros(4, bool), SignalsConfig())
    apply_edge(d, none, long_only=True)
    assert d.action.tolist() == [A_HOLD] * 4
    assert [REASONS[r] for r in d.reason] == ["no_edge", "no_edge", "no_edge", "warming_up"]
    edge = msgspec.structs.replace(none, long_edge=True, long_margin=0.002)
    d = decide(p, ready, np.zeros(4, bool), SignalsConfig())
    apply_edge(d, edge, long_only=True)
    # E_long: 0.9 -> +0.005 (> margin: BUY); 0.5 -> -0.003 (HOLD); 0.1 -> -0.011 (expected loss: exit)
    assert d.action.tolist() == [A_BUY, A_HOLD, A_SELL, A_HOLD]
    assert [SIDES[s] for s in d.side] == ["long", "", "exit", ""]
    assert [REASONS[r] for r in d.reason] == ["", "", "", "warming_up"]


def test_a_trained_set_carries_its_policy_and_the_path_serves_it(tiny_registry: Path) -> None:
    ms = load_model_set(tiny_registry)
    m = ms.manifest
    assert m.edge is not None
    assert m.edge.horizon == 60
    assert m.edge.cost == pytest.approx(2 * (10 + 5) / 1e4)  # the backtest's default costs
    assert m.edge.rows > 0
    assert SignalsConfig().policy == "cost_aware"  # the default
    assert Decider.for_manifest(m, SignalsConfig(), RiskConfig()).edge == m.edge
    assert Decider.for_manifest(m, SignalsConfig(policy="bands"), RiskConfig()).edge is None
    old = msgspec.structs.replace(m, edge=None)  # a set made before the policy existed: bands, and a warning
    with structlog.testing.capture_logs() as logs:
        assert Decider.for_manifest(old, SignalsConfig(), RiskConfig()).edge is None
    assert [e["event"] for e in logs] == ["no_fitted_policy"]
    assert logs[0]["model_set"] == m.model_set_id


def test_the_cost_aware_policy_is_the_same_in_bulk_and_minute_by_minute(tiny_registry: Path) -> None:
    from datetime import timedelta

    from memed.backtest.replay import replay_signals, replay_signals_minutewise
    from memed.config import parse_config
    from memed.data import synth_market
    from memed.decision import DecisionPath

    cfg = parse_config('[signals]\nmodels = ["logreg", "lgbm"]\npolicy = "cost_aware"\n')
    ms = load_model_set(tiny_registry)
    bars = synth_market(4, 600, seed=5)
    windows = [(bars["ts"].min(), bars["ts"].max() + timedelta(minutes=1))]
    slow = replay_signals_minutewise(DecisionPath(ms, cfg.signals, cfg.risk), bars, windows)  # type: ignore[arg-type]
    fast = replay_signals(DecisionPath(ms, cfg.signals, cfg.risk), bars, windows)  # type: ignore[arg-type]
    for col in ("action", "reason", "side"):
        assert fast[col].equals(slow[col]), col
    scored = fast.filter(fast["reason"].is_in(["", "no_edge"]))
    assert scored.height > 500
    edge = ms.manifest.edge
    assert edge is not None
    if not edge.long_edge:  # the tiny synthetic set: whatever validation said, the replay obeys it
        assert (scored["reason"] == "no_edge").all()
        assert (scored["action"] == "HOLD").all()
    else:
        assert (scored["reason"] == "").all()


RANDOM_WALK_TOML = """
[train]
models = ["logreg"]
horizons = [15, 30, 60]
[signals]
models = ["logreg"]
policy = "cost_aware"
[backtest]
train_minutes = 2400
test_minutes = 600
step_minutes = 600
max_folds = 2
workers = 1
"""


def test_on_random_walks_the_cost_aware_policy_does_not_trade(tmp_path: Path) -> None:
    """A market with no predictability (driftless random walks): the walk-forward backtest, retraining
    the default family per fold, trades nothing after costs under the cost-aware policy -- it loses
    nothing. The fixed bands do not trade it either: calibrated on validation, the probabilities stay at
    the base rate, inside the 0.45-0.55 band."""
    from memed.backtest.run import run_backtest
    from memed.config import parse_config
    from memed.data import random_walk_market, write_dataset

    data = tmp_path / "rw.parquet"
    write_dataset(random_walk_market(12, 3600, seed=3), data)
    aware = run_backtest([data], parse_config(RANDOM_WALK_TOML), tmp_path / "aware")
    model = aware["trading"]["model"]
    assert model["trades"] == 0
    assert model["total_return"] == 0.0
    signals = pl.read_parquet(tmp_path / "aware" / "signals.parquet")
    scored = signals.filter(pl.col("reason").is_in(["", "no_edge"]))
    assert scored.height > 5_000
    assert (scored["reason"] == "no_edge").all()  # validation found no edge in any fold
    assert len(aware["policy"]) == len(aware["model_sets"]) >= 1
    assert all(not r["edge"] and set(r["horizon_scores"]) == {"15", "30", "60"} for r in aware["policy"])
    assert aware["per_trade"] == {}
    bands = run_backtest([data], parse_config(RANDOM_WALK_TOML.replace('"cost_aware"', '"bands"')),
                         tmp_path / "bands")  # fmt: skip
    assert bands["trading"]["model"]["trades"] == 0
    p = pl.read_parquet(tmp_path / "bands" / "signals.parquet")["p_up"].drop_nans().drop_nulls()
    assert p.len() > 5_000
    assert float((p - 0.5).abs().max()) < 0.05  # type: ignore[operator]


def _paths(per_trade: list[float], lows: list[float], trades: int, v: float = 1.0) -> ExitPaths:
    """``trades`` tokens, each an entry bar at close 100 then the bars ``per_trade`` (closes, relative to
    the entry in units of ``v``) with ``lows`` (likewise); highs sit at the closes. One bar's ATR ``v``."""
    n = 1 + len(per_trade)
    closes = np.r_[100.0, 100.0 + v * np.array(per_trade)]
    low = np.r_[100.0, 100.0 + v * np.array(lows)]
    ts = np.tile(np.arange(n, dtype=np.float64), trades)
    end = np.repeat(np.arange(1, trades + 1) * n, n)
    c = np.tile(closes, trades)
    return ExitPaths(ts=ts, open=c, high=c, low=np.tile(low, trades), close=c, end=end,
                     atr=np.full(n * trades, v), rows=np.arange(trades) * n, interval_minutes=1)  # fmt: skip


def test_stops_and_targets_are_chosen_by_replaying_validation_trades() -> None:
    """Every trade dips 1.5 one-bar ATRs, then climbs to +2.5 at the 4-bar horizon (horizon volatility:
    ATR x sqrt(4) = 2): a 0.5-sigma stop (-1) is hit, any wider one survives; a 0.5-sigma target (+1) is
    taken early at +1.5, a 1-sigma one (+2) at the last bar's +2.5, a higher one is not reached and the
    trade earns the horizon's +2.5."""
    paths = _paths([-0.5, 0.5, 1.5, 2.5], [-1.5, -0.5, 0.5, 1.5], trades=40)
    fit = EdgeFit(horizon=4, cost=0.003, up_move=0.01, down_move=0.01, long_edge=True, long_margin=-1.0)
    chosen = fit_exits(fit, np.full(40, 0.9), paths)
    assert (chosen.stop_sigma, chosen.target_sigma) == (1.0, 1.0)  # the first pair that earns the most
    assert chosen.exit_net_mean == pytest.approx(np.log(102.5 / 100) - 0.003)
    assert chosen.long_edge
    gapped = _paths([-9.0, -9.0, 3.0, 3.0], [-9.0, -9.0, 3.0, 3.0], trades=40)  # through every stop
    lost = fit_exits(fit, np.full(40, 0.9), gapped)
    assert lost.exit_net_mean < 0
    assert not lost.long_edge  # held to the horizon it would have paid; served with stops it loses


def test_the_decision_horizon_is_the_one_that_paid_most_per_bar_of_capital() -> None:
    none = EdgeFit(horizon=15, cost=0.003)
    short_h = msgspec.structs.replace(none, horizon=30, long_edge=True, long_net_total=3.0)  # 0.1 per bar
    long_h = msgspec.structs.replace(none, horizon=240, long_edge=True, long_net_total=12.0)  # 0.05 per bar
    best = choose_horizon([none, short_h, long_h], interval_minutes=1)
    assert best.horizon == 30
    assert best.horizon_scores == {"15": None, "30": pytest.approx(0.1), "240": pytest.approx(0.05)}
    nothing = choose_horizon([none, msgspec.structs.replace(none, horizon=60)], 1, fallback=60)
    assert nothing.horizon == 60  # no edge anywhere: the configured decision horizon
    assert not nothing.long_edge


def test_the_decider_serves_the_policy_horizon_and_its_stops(tiny_registry: Path) -> None:
    m = load_model_set(tiny_registry).manifest
    assert 30 in m.horizons
    edge = EdgeFit(horizon=30, cost=0.003, up_move=0.01, down_move=0.01, long_edge=True, stop_sigma=1.5,
                   target_sigma=2.0)  # fmt: skip
    d = Decider.for_manifest(msgspec.structs.replace(m, edge=edge), SignalsConfig(), RiskConfig())
    assert d.decision_cols.tolist() == [m.horizons.index(30)]
    assert d.hold_minutes == 30
    scale = np.sqrt(30 / m.interval_minutes)
    assert d.risk.stop_atr == pytest.approx(1.5 * scale)
    assert d.risk.take_profit_atr == pytest.approx(2.0 * scale)
    bands = Decider.for_manifest(
        msgspec.structs.replace(m, edge=edge), SignalsConfig(policy="bands"), RiskConfig()
    )
    assert bands.hold_minutes == 60  # the bands: signals.decision_horizons and the configured ATR multiples
    assert bands.risk == RiskConfig()
    no_edge = msgspec.structs.replace(edge, long_edge=False)
    assert (
        Decider.for_manifest(msgspec.structs.replace(m, edge=no_edge), SignalsConfig(), RiskConfig()).risk
        == RiskConfig()
    )


def test_an_edge_chosen_on_the_earlier_half_must_hold_on_the_later_half() -> None:
    """The settings are confirmed on rows the choice never saw: where the later half's moves follow the
    probability the edge stays (t of the net per hour >= CONFIRM_T); where they do not, it is dropped."""
    rng = np.random.default_rng(4)
    p = rng.uniform(0.2, 0.8, 20_000)
    minute = np.arange(len(p), dtype=np.float64)
    fit = EdgeFit(horizon=60, cost=0.003, up_move=0.01, down_move=0.01, long_edge=True)  # BUY at p > 0.65
    kept = confirm(fit, p, _moves(p, rng), minute, None, np.arange(len(p)))
    assert kept.long_edge
    assert kept.confirm_t >= CONFIRM_T
    assert kept.confirm_trades == int((p * 0.01 - (1 - p) * 0.01 - 0.003 > 0).sum())
    assert kept.confirm_net_mean > 0
    dropped = confirm(fit, p, _moves(np.full(len(p), 0.5), rng), minute, None, np.arange(len(p)))
    assert not dropped.long_edge
    assert dropped.confirm_t < CONFIRM_T
