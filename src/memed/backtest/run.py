"""``memed backtest``: plan → per fold train (trainers) → replay (the daemon's decision path) → simulate →
metrics beside baselines → ``metrics.json``, ``signals.parquet``, ``trades.parquet``, ``equity.parquet``,
``report.html``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl

from memed.backtest.fitted import fitted_baseline_p
from memed.backtest.folds import GroupResult, fold_groups, run_groups
from memed.backtest.metrics import (
    EquityEvents,
    TradeArrays,
    trade_breakdown,
    trade_expectancy,
    trading_metrics,
)
from memed.backtest.plan import Fold, check_embargo, in_sample_overlaps, over_coverage, plan_folds
from memed.backtest.simulator import SimResult, market_bars, simulate
from memed.config import MemedConfig, RiskConfig
from memed.data.frames import epoch_minutes
from memed.data.loaders import expand_sources, load_dataset
from memed.data.schema import infer_interval_minutes
from memed.errors import DataError
from memed.logs import get_logger
from memed.models.manifest import Manifest
from memed.models.registry import load_model_set
from memed.signals.policy import A_BUY, A_HOLD, A_SELL, S_EXIT, S_LONG, S_NONE, S_SHORT
from memed.signals.risk import size_positions
from memed.trainers.calibration import reliability
from memed.trainers.evaluation import FITTED, too_good
from memed.trainers.labels import add_labels, usable_horizons
from memed.trainers.metrics import baseline_probabilities, binary_metrics
from memed.trainers.progress import NullProgress, ProgressSink
from memed.trainers.uncertainty import day_index, day_weights, intervals, paired_difference

log = get_logger("memed.backtest")
FOLDS_NAMED = 3
"""Folds a warning or an error names (of those that trip a guard)."""


def _baseline_signals(
    signals: pl.DataFrame, past: pl.DataFrame, risk: RiskConfig, flip: bool, sides: str
) -> pl.DataFrame:
    """Persistence (or, with ``flip``, reversal) as trading rules, sized by the same risk function."""
    df = signals.select("token", "ts", "fold", "close", "atr", "recent_notional", "p_up").join(
        past, on=["token", "ts"], how="left"
    )
    sign = np.sign(np.nan_to_num(df["past"].to_numpy(), nan=0.0)) * (-1 if flip else 1)
    action = np.where(sign > 0, A_BUY, np.where(sign < 0, A_SELL, A_HOLD)).astype(np.int8)
    ready = ~np.isnan(df["p_up"].to_numpy()) | (df["atr"].is_not_null().to_numpy())
    action[~ready] = A_HOLD
    p = np.where(action == A_BUY, 1.0, 0.0)
    short = S_SHORT if sides == "both" else S_EXIT
    side = np.where(action == A_BUY, S_LONG, np.where(action == A_SELL, short, S_NONE)).astype(np.int8)
    plan = size_positions(
        side,
        p,
        df["close"].to_numpy(),
        df["atr"].to_numpy(),
        df["recent_notional"].to_numpy(),
        np.full(df.height, np.nan),
        risk,
    )
    names = np.array(["HOLD", "BUY", "SELL"])
    act = np.where(action == A_BUY, 1, np.where(action == A_SELL, 2, 0))
    act[((side == S_LONG) | (side == S_SHORT)) & ~np.isfinite(plan.notional)] = 0  # an exit needs no size
    return df.select("token", "ts", "fold").with_columns(
        pl.Series("action", names[act]),
        pl.Series("units", plan.units),
        pl.Series("entry", plan.entry),
        pl.Series("stop_loss", plan.stop_loss),
        pl.Series("take_profit", plan.take_profit),
    )


def _buy_and_hold(bars: pl.DataFrame, folds: list[Fold], equity0: float) -> pl.DataFrame:
    rows = []
    by_time = bars.select("token", "ts", "close").sort("ts", maintain_order=True)
    t = by_time["ts"]
    for f in folds:
        a, b = t.search_sorted(f.test_start, "left"), t.search_sorted(f.test_end, "left")
        first = (
            by_time.slice(a, b - a)  # the fold's test window: a slice of the time-sorted bars
            .group_by("token")
            .agg(pl.col("ts").min(), pl.col("close").sort_by("ts").first())
        )
        n = max(first.height, 1)
        for token, ts, close in first.iter_rows():
            rows.append(
                {
                    "token": token,
                    "ts": ts,
                    "fold": f.index,
                    "action": "BUY",
                    "units": equity0 / n / close,
                    "entry": close,
                    "stop_loss": math.nan,
                    "take_profit": math.nan,
                }
            )
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "token": pl.String,
        "ts": pl.Datetime("us", "UTC"),
        "fold": pl.Int64,
        "action": pl.String,
        "units": pl.Float64,
        "entry": pl.Float64,
        "stop_loss": pl.Float64,
        "take_profit": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def run_backtest(
    sources: Iterable[str | Path],
    cfg: MemedConfig,
    out: Path,
    *,
    models: Path | None = None,
    allow_in_sample: bool = False,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Plan, train (or replay ``models``), simulate, report into ``out``; the metrics as a dict.

    A fixed model set whose training data (its manifest's fit period) overlaps a test window is refused,
    naming the overlap, unless ``allow_in_sample`` (the overlap is then a warning in the metrics)."""
    progress = progress or NullProgress()
    t_start = time.perf_counter()
    files = [str(p) for p in expand_sources(sources)]
    bars, _ = load_dataset(files, cfg.data.selection())
    interval = infer_interval_minutes(bars)
    bt = cfg.backtest
    fixed = load_model_set(models) if models is not None else None
    if fixed is not None and fixed.manifest.interval_minutes != interval:
        raise DataError(
            f"model set {fixed.id} is for {fixed.manifest.interval_minutes}-minute bars; the data has "
            f"{interval}-minute bars: train a set on this data, or select data of its interval (--timeframe)"
        )
    horizons = list(fixed.manifest.horizons) if fixed else usable_horizons(cfg.train.horizons, interval)
    longest = max(horizons)
    embargo = bt.embargo_minutes or longest
    start, end = bars["ts"].min(), bars["ts"].max()
    assert isinstance(start, datetime)
    assert isinstance(end, datetime)
    folds = plan_folds(
        start,
        end,
        train_minutes=bt.train_minutes,
        test_minutes=bt.test_minutes,
        step_minutes=bt.step_minutes,
        embargo_minutes=embargo,
        expanding=bt.expanding,
        retrain_every=bt.retrain_every,
    )
    folds = over_coverage(folds, np.unique(epoch_minutes(bars["ts"])), bt.retrain_every, bt.max_folds)
    if not folds:
        raise DataError(
            f"data spans {start} .. {end}: too short for train {bt.train_minutes} + embargo {embargo} + "
            f"test {bt.test_minutes} minutes (see [backtest] in the config)"
        )
    if fixed is None:
        check_embargo(folds, longest)
    in_sample = _in_sample(fixed.manifest, folds, bars) if fixed is not None else ""
    if in_sample and not allow_in_sample:
        raise DataError(
            f"{in_sample}; pass --allow-in-sample to replay it anyway (its figures are then in-sample)"
        )
    out.mkdir(parents=True, exist_ok=True)
    groups = fold_groups(folds, fixed_models=fixed is not None)
    progress.start("folds", f"backtest: {len(folds)} folds", len(folds))
    if cfg.backtest.executor == "ray":
        from memed.backtest.ray_pool import run_groups_on_ray  # noqa: PLC0415 - the ray extra

        results = run_groups_on_ray(groups, bars, cfg, out, models, progress)
    else:
        results = run_groups(groups, bars, cfg, out, models, progress)
    progress.finish("folds")
    timings = {"features": 0.0, "inference": 0.0, "decision": 0.0, "training": 0.0, "replay": 0.0}
    for r in results:
        for k in timings:
            timings[k] += r.timings.get(k, 0.0)
    frames = [r.signals for r in results if r.signals.height]
    signals = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    if signals.is_empty():
        raise DataError("the replay produced no signal inside the test windows")
    hold = (
        max(h for h in horizons if h in cfg.signals.decision_horizons)
        if set(horizons) & set(cfg.signals.decision_horizons)
        else longest
    )
    tb = market_bars(bars)
    window_end = {f.index: f.test_end.timestamp() / 60 for f in folds}
    equity0 = cfg.risk.equity
    t0 = time.perf_counter()
    labelled = add_labels(bars.select("token", "ts", "close"), horizons, cfg.train.ties)
    past = labelled.select("token", "ts", pl.col(f"past_{hold}").alias("past"))
    sides = cfg.signals.sides
    strategies = {  # name: (signals, holding time); every one goes through the same simulator
        "model": (signals, None),  # each fold's set says how long (its policy's decision horizon)
        "persistence": (_baseline_signals(signals, past, cfg.risk, flip=False, sides=sides), hold),
        "reversal": (_baseline_signals(signals, past, cfg.risk, flip=True, sides=sides), hold),
        "buy_and_hold": (_buy_and_hold(bars, folds, equity0), 10**9),
    }
    sims: dict[str, SimResult] = {
        name: simulate(sig, tb, bt, equity0=equity0, hold_minutes=h, window_end=window_end, sides=sides)
        for name, (sig, h) in strategies.items()
    }
    sims["always_hold"] = SimResult(trades=sims["model"].trades.clear(), equity=sims["model"].equity.clear())
    timings["simulation"] = time.perf_counter() - t0
    fitted_features, p_fitted = fitted_baseline_p(
        bars, signals, labelled, folds, fixed_models=fixed is not None, interval_minutes=interval,
        gap_fill_max_minutes=cfg.data.gap_fill_max_minutes, horizons=horizons, l2=cfg.train.logreg.l2,
    )  # fmt: skip
    scored = signals.with_columns(pl.Series(f"fit_{h}", p_fitted[:, k]) for k, h in enumerate(horizons))
    metrics = _metrics(scored, labelled, horizons, folds, sims, equity0, bars)
    metrics["fitted_baseline_features"] = list(fitted_features)
    if in_sample:
        metrics["warnings"].insert(0, f"{in_sample}: these figures are in-sample")
    metrics["timings_seconds"] = timings | {"total": time.perf_counter() - t_start}
    metrics["token_minutes_replayed"] = float(signals.height)
    metrics["config_hash"] = cfg.hash()
    metrics["data"] = {
        "files": files,
        "tokens": bars["token"].n_unique(),
        "start": str(start),
        "end": str(end),
    }
    metrics["model_sets"] = sorted({r.model_set for r in results})
    metrics["policy"], unconfirmed = policy_summary(results, metrics["trading"]["model"]["total_return"])
    if unconfirmed:
        metrics["warnings"].insert(0, unconfirmed)
    metrics["plan"] = [
        {
            "fold": f.index,
            "train_start": str(f.train_start),
            "train_end": str(f.train_end),
            "test_start": str(f.test_start),
            "test_end": str(f.test_end),
            "retrain": f.retrain,
        }
        for f in folds
    ]
    signals.write_parquet(out / "signals.parquet")
    monitor = _monitor(signals, horizons, interval, cfg)
    (out / "monitor.json").write_bytes(msgspec.json.format(msgspec.json.encode(_finite(monitor)), indent=1))
    sims["model"].trades.write_parquet(out / "trades.parquet")
    sims["model"].equity.write_parquet(out / "equity.parquet")
    (out / "metrics.json").write_bytes(msgspec.json.format(msgspec.json.encode(_finite(metrics)), indent=2))
    from memed.backtest.report import write_report  # noqa: PLC0415

    write_report(out / "report.html", metrics, sims, equity0, folds)
    return metrics


def _monitor(
    signals: pl.DataFrame, horizons: list[int], interval: int, cfg: MemedConfig
) -> list[dict[str, Any]]:
    """The delayed-label scores the daemon would have published over the replayed minutes
    (:mod:`memed.monitor`; ``monitor.json``)."""
    from memed.monitor.stream import ScoreStream, score_signals  # noqa: PLC0415

    mon = cfg.monitor
    first = f"_{horizons[0]}"
    members = tuple(
        sorted(c[2 : -len(first)] for c in signals.columns if c.startswith("m_") and c.endswith(first))
    )
    stream = ScoreStream(tuple(horizons), interval_minutes=interval, window_minutes=mon.window_minutes,
                         every_minutes=mon.every_minutes, ties=cfg.train.ties,
                         sample_share=mon.sample_share, members=members)  # fmt: skip
    return [{"minute": s.minute, "horizons": s.scores} for s in score_signals(signals, stream)]


def _in_sample(manifest: Manifest, folds: list[Fold], bars: pl.DataFrame) -> str:
    """Why replaying ``manifest``'s set over ``folds`` is in-sample ('' when it is not)."""
    fit_start = manifest.split.fit_start or manifest.data.start
    fit_end = manifest.split.fit_end or manifest.data.end
    start, end = (datetime.fromisoformat(t) for t in (fit_start, fit_end))
    overlaps = in_sample_overlaps(folds, start, end, max(manifest.horizons))
    if not overlaps:
        return ""
    shared = set(manifest.data.token_names) & set(bars["token"].unique().to_list())
    tokens = (
        f", {len(shared)} of the test tokens among its training tokens" if manifest.data.token_names else ""
    )
    shown = "; ".join(overlaps[:FOLDS_NAMED])
    shown += f"; and {len(overlaps) - FOLDS_NAMED} more" if len(overlaps) > FOLDS_NAMED else ""
    return (
        f"model set {manifest.model_set_id} was fit on bars {fit_start} .. {fit_end}{tokens}, which "
        f"{len(overlaps)} of {len(folds)} test windows overlap ({shown})"
    )


def _finite(obj: Any) -> Any:
    if isinstance(obj, np.floating | np.integer):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _horizon_metrics(
    frame: pl.DataFrame, h: int, resampling: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, Any]:
    """The model's and every baseline's metrics at horizon ``h``; with ``resampling`` (each row's day and
    the day weights of the draws) their day-block intervals and the model's paired difference to the
    fitted baseline."""
    if not frame.height:
        empty = binary_metrics(np.zeros(0), np.zeros(0))
        return {k: dict(empty) for k in ("model", "majority", "persistence", "reversal", FITTED)}
    y = frame[f"y_{h}"].to_numpy().astype(float)
    p = frame[f"p_{h}"].to_numpy().astype(float)
    probs = {"model": p} | baseline_probabilities(frame[f"past_{h}"].to_numpy().astype(float), 0.5)
    probs[FITTED] = frame[f"fit_{h}"].to_numpy().astype(float)
    out: dict[str, Any] = {k: binary_metrics(y, v) for k, v in probs.items()}
    if resampling is not None:
        days, weights = resampling
        for k, v in probs.items():
            out[k] |= intervals(y, v, days, weights)
        out["model"] |= paired_difference(y, p, probs[FITTED], days, weights, FITTED)
        ece, table = reliability(p, y, days, weights)
        out["model"] |= ece
        out["reliability"] = [msgspec.to_builtins(b) for b in table]
    return out


def _metrics(
    signals: pl.DataFrame,
    labelled: pl.DataFrame,
    horizons: list[int],
    folds: list[Fold],
    sims: dict[str, SimResult],
    equity0: float,
    bars: pl.DataFrame,
) -> dict[str, Any]:
    joined = signals.join(labelled, on=["token", "ts"], how="left")
    out: dict[str, Any] = {"horizons": {}, "trading": {}, "folds": [], "warnings": []}
    by_fold = {int(k[0]): v for k, v in joined.partition_by("fold", as_dict=True).items()}
    empty = joined.clear()
    arrays = {name: (TradeArrays.of(sim.trades), EquityEvents.of(sim.equity)) for name, sim in sims.items()}
    scopes = [("overall", joined)] + [(f"fold_{f.index}", by_fold.get(f.index, empty)) for f in folds]
    leaky_folds: dict[int, list[tuple[int, str]]] = {}  # the tripwire per fold and horizon
    days = day_index(joined["ts"].dt.epoch("s").to_numpy() / 60.0)
    weights = day_weights(int(days.max()) + 1 if len(days) else 1)
    for scope, frame in scopes:
        per_h: dict[str, Any] = {}
        for h in horizons:
            per_h[str(h)] = _horizon_metrics(frame, h, (days, weights) if scope == "overall" else None)
            model = per_h[str(h)]["model"]
            for problem in too_good(model["roc_auc"], per_h[str(h)][FITTED]["roc_auc"], model["n"]):
                if scope == "overall":
                    out["warnings"].append(f"horizon {h}: model {problem}: a leak until proven otherwise")
                else:
                    leaky_folds.setdefault(h, []).append((int(scope.split("_")[1]), f"model {problem}"))
        if scope == "overall":
            out["horizons"] = per_h
        else:
            f = folds[int(scope.split("_")[1])]
            trading = {}
            for name, (tr, eq) in arrays.items():
                inside = tr.entered(f.test_start, f.test_end)
                trading[name] = trading_metrics(inside, eq, equity0, f.test_start, f.test_end, 0.0, 0.0)
            out["folds"].append({"fold": f.index, "horizons": per_h, "trading": trading})
    for h, hits in leaky_folds.items():
        folds_hit = sorted({k for k, _ in hits})
        shown = "; ".join(f"fold {k}: {problem}" for k, problem in hits[:FOLDS_NAMED])
        shown += "; ..." if len(hits) > FOLDS_NAMED else ""
        out["warnings"].append(
            f"horizon {h}: too good in {len(folds_hit)} of {len(folds)} folds ({shown}): "
            "a leak until proven otherwise"
        )
    start = min(f.test_start for f in folds)
    end = max(f.test_end for f in folds)
    for name, sim in sims.items():
        tr, eq = arrays[name]
        out["trading"][name] = trading_metrics(tr, eq, equity0, start, end, sim.fees, sim.turnover)
        out["trading"][name]["skipped_orders"] = float(sum(sim.skipped.values()))
    model_trades = sims["model"].trades
    out["exit_reasons"] = trade_breakdown(model_trades, "exit_reason")
    out["tokens"] = trade_breakdown(model_trades, "token")
    out["per_trade"] = trade_expectancy(model_trades)
    return out


POLICY_LOSS = 0.01
"""A loss on the test windows beyond this fraction of equity is flagged against what validation said."""


def policy_summary(results: list[GroupResult], total_return: float) -> tuple[list[dict[str, Any]], str]:
    """Per fold group, the served cost-aware policy (decision horizon, the sides with an edge on
    validation, stop and target), and a warning ('' when none): a loss beyond :data:`POLICY_LOSS` after
    validation showed an edge that the test windows did not confirm, or a loss with no edge anywhere."""
    rows: list[dict[str, Any]] = []
    for r in sorted(results, key=lambda r: r.index):
        if r.policy is None:
            continue
        g = r.policy
        edges = [side for side in ("long", "short") if g[f"{side}_edge"]]
        rows.append({
            "folds": list(r.folds), "model_set": r.model_set, "horizon": g["horizon"], "edge": edges,
            "stop_sigma": g["stop_sigma"], "target_sigma": g["target_sigma"], "long_margin": g["long_margin"],
            "horizon_scores": g["horizon_scores"], "confirm_t": g["confirm_t"],
            "confirm_trades": g["confirm_trades"],
        })  # fmt: skip
    if total_return >= -POLICY_LOSS or not rows:
        return rows, ""
    with_edge = [row for row in rows if row["edge"]]
    if with_edge:
        named = ", ".join(f"folds {row['folds'][0]}-{row['folds'][-1]}" for row in with_edge[:5])
        return rows, (
            f"validation showed an edge after costs for {len(with_edge)} of {len(rows)} model sets ({named}) "
            f"that the test windows did not confirm: the model lost {-total_return:.1%}"
        )
    return rows, f"no model set had an edge on validation, yet the model lost {-total_return:.1%}"
