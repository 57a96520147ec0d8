"""The cost-aware policy, fitted on the validation split: is there an edge after costs, at which horizon,
from what expected return does a trade pay, and where do its stop and target go?

For a candidate horizon ``h``, the served ensemble's calibrated probability ``p`` at ``h``, and a trade
held for ``h``:

* the sizes of up and down moves at ``h``, measured on the validation rows: ``U = mean(r | r > 0)``,
  ``D = mean(-r | r < 0)`` with ``r`` the forward log return;
* the round-trip cost ``c = 2 x (fee_bps + slippage_bps) / 1e4`` (the backtest's own costs);
* each row's expected net return of a long: ``E_long = p U - (1 - p) D - c``; of a short:
  ``E_short = (1 - p) D - p U - c``.

**Margin** (:func:`fit_edge`): among candidate margins (0 and the quantiles of ``E`` that leave 50 % …
0.1 % of the rows), the one whose trades (``E > margin``) made the largest total realised net return
``sum(side x r - c)``, with at least ``MIN_TRADES`` trades spread over at least ``MIN_BETS`` independent
bets (distinct token and ``h``-long block of time) and a positive mean. None: **no edge** at ``h``.

**Horizon** (:func:`choose_horizon`): the candidate whose best margins made the most per bar of capital,
as an overlapping portfolio (a trade every bar while ``E`` stays high, each with ``1/h`` of the capital:
total x interval / ``h``). No candidate with an edge: a served ``cost_aware`` policy trades nothing (HOLD,
reason ``no_edge``).

**Stops and targets** (:func:`fit_exits`): sized in units of the horizon's volatility, ``ATR(14) x
sqrt(h / interval)`` (one bar's ATR would put them inside the noise of an ``h``-long hold), the pair of
multiples whose trades, replayed bar by bar under the simulator's own exit rule
(:func:`memed.signals.exits.first_exit`), made the most on validation.

Validation rows overlap in time, so the totals overstate how many independent bets there were; they
rank settings, they are not a forecast. Nothing here reads a test row.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import polars as pl
from numba import njit

from memed.config import MemedConfig
from memed.data.frames import epoch_minutes, run_bounds
from memed.features.spec import ATR_FEATURE
from memed.models.manifest import EdgeFit
from memed.signals.exits import first_exit
from memed.signals.policy import expected_long
from memed.trainers.dataset import TrainingData

MIN_TRADES = 30
MIN_BETS = 30
QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
STOP_SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0)
TARGET_SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
MAX_PATHS = 20_000
"""Trades replayed per stop/target candidate at most (evenly spaced over the validation entries)."""


def _best_margin(
    e: np.ndarray, net: np.ndarray, block: np.ndarray
) -> tuple[float, int, float, float, int] | None:
    """``(margin, trades, mean net, total net, bets)`` of the best margin for one side, or None."""
    candidates = sorted({0.0, *np.quantile(e, QUANTILES).tolist()})
    best: tuple[float, int, float, float, int] | None = None
    for m in candidates:
        if m < 0:
            continue
        take = e > m
        n = int(take.sum())
        if n < MIN_TRADES:
            continue
        bets = len(np.unique(block[take]))
        if bets < MIN_BETS:
            continue
        total = float(net[take].sum())
        mean = total / n
        if mean > 0 and (best is None or total > best[3]):
            best = (float(m), n, mean, total, bets)
    return best


def fit_edge(p: np.ndarray, fwd: np.ndarray, horizon: int, fee_bps: float, slippage_bps: float,
             sides: str, block: np.ndarray | None = None) -> EdgeFit:  # fmt: skip
    """The policy at one ``horizon`` on validation rows: decision probabilities ``p``, forward log returns
    ``fwd`` at that horizon (NaN: unknown); ``sides`` as ``signals.sides``; ``block`` the independent bet
    each row belongs to (None: every row its own)."""
    keep = ~(np.isnan(p) | np.isnan(fwd))
    p, r = p[keep], fwd[keep]
    block = np.arange(len(r)) if block is None else np.asarray(block)[keep]
    cost = 2.0 * (fee_bps + slippage_bps) / 1e4
    ups, downs = r[r > 0], r[r < 0]
    if len(ups) == 0 or len(downs) == 0:
        return EdgeFit(horizon=horizon, cost=cost, sides=sides, rows=len(r))
    u, d = float(ups.mean()), float(-downs.mean())
    e_long = expected_long(p, u, d, cost)
    long = _best_margin(e_long, r - cost, block)
    short = _best_margin(-e_long - 2 * cost, -r - cost, block) if sides == "both" else None
    fit = EdgeFit(horizon=horizon, cost=cost, sides=sides, rows=len(r), up_move=u, down_move=d)
    if long is not None:
        fit = _with(fit, "long", long)
    if short is not None:
        fit = _with(fit, "short", short)
    return fit


def _with(fit: EdgeFit, side: str, best: tuple[float, int, float, float, int]) -> EdgeFit:
    m, n, mean, total, bets = best
    fields = {"edge": True, "margin": m, "trades": n, "net_mean": mean, "net_total": total, "bets": bets}
    return msgspec.structs.replace(fit, **{f"{side}_{k}": v for k, v in fields.items()})


def score(fit: EdgeFit, interval_minutes: int) -> float | None:
    """Validation net per bar of capital of a fit's trades (None: no edge on any side)."""
    if not (fit.long_edge or fit.short_edge):
        return None
    total = (fit.long_net_total if fit.long_edge else 0.0) + (fit.short_net_total if fit.short_edge else 0.0)
    return total * interval_minutes / fit.horizon


def choose_horizon(fits: list[EdgeFit], interval_minutes: int, fallback: int | None = None) -> EdgeFit:
    """The fit with the best :func:`score`, carrying every candidate's; with no edge anywhere, the no-edge
    fit at ``fallback`` (the configured decision horizon) if it is a candidate, else the first."""
    scores = {str(f.horizon): score(f, interval_minutes) for f in fits}
    with_edge = [f for f in fits if scores[str(f.horizon)] is not None]
    plain = next((f for f in fits if f.horizon == fallback), fits[0])
    best = max(with_edge, key=lambda f: scores[str(f.horizon)] or 0.0) if with_edge else plain
    return msgspec.structs.replace(best, horizon_scores=scores)


@dataclass(frozen=True)
class ExitPaths:
    """The bars a validation trade is replayed on: every row of the training frame (sorted by token,
    then time), the row index of each validation row, and per row one bar's ATR in price units."""

    ts: np.ndarray
    """Epoch minutes."""
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    end: np.ndarray
    """Per row: one past the last row of its token's run."""
    atr: np.ndarray
    rows: np.ndarray
    """Frame row of each validation row, in the order of the probabilities."""
    interval_minutes: int


@njit(cache=True)
def _replay(ts: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
            end: np.ndarray, atr: np.ndarray, rows: np.ndarray, sides: np.ndarray, scale: float,
            stop_k: float, take_k: float, horizon: float, cost: float) -> tuple[float, int]:  # fmt: skip
    """Total net log return and count of the trades entered at ``rows``' closes, each held to the stop,
    the target or the horizon."""
    total = 0.0
    n = 0
    for q in range(len(rows)):
        r = rows[q]
        side = sides[q]
        c = close[r]
        v = atr[r] * scale
        if r + 1 >= end[r] or not (np.isfinite(v) and v > 0.0 and c > 0.0):
            continue
        stop = c - side * stop_k * v
        take = c + side * take_k * v
        _, price, _ = first_exit(
            ts, open_, high, low, close, r + 1, end[r], side, stop, take, ts[r] + horizon
        )
        if price <= 0.0:
            price = 1e-300
        total += side * np.log(price / c) - cost
        n += 1
    return total, n


def fit_exits(fit: EdgeFit, p: np.ndarray, paths: ExitPaths) -> EdgeFit:
    """The stop and target multiples (of the horizon's volatility) whose trades made the most on the
    validation rows; ``p`` the decision probabilities of ``paths.rows``. A fit without an edge is
    returned as it is."""
    if not (fit.long_edge or fit.short_edge):
        return fit
    e_long = expected_long(p, fit.up_move, fit.down_move, fit.cost)
    e_short = -e_long - 2 * fit.cost
    buy = fit.long_edge & (e_long > fit.long_margin)
    sell = fit.short_edge & (e_short > fit.short_margin) & ~buy
    picked = np.flatnonzero(buy | sell)
    if len(picked) > MAX_PATHS:
        picked = picked[np.linspace(0, len(picked) - 1, MAX_PATHS).astype(np.int64)]
    rows = np.ascontiguousarray(paths.rows[picked], dtype=np.int64)
    sides = np.where(buy[picked], 1.0, -1.0)
    scale = float(np.sqrt(fit.horizon / paths.interval_minutes))
    best: tuple[float, float, float] | None = None
    for s in STOP_SIGMAS:
        for t in TARGET_SIGMAS:
            total, n = _replay(paths.ts, paths.open, paths.high, paths.low, paths.close, paths.end, paths.atr,
                               rows, sides, scale, s, t, float(fit.horizon), fit.cost)  # fmt: skip
            if n and (best is None or total / n > best[2]):
                best = (s, t, total / n)
    if best is None:
        return fit
    fit = msgspec.structs.replace(fit, stop_sigma=best[0], target_sigma=best[1], exit_net_mean=best[2])
    if best[2] <= 0:  # held to the horizon it paid; with any stop and target it would not have: no edge
        fit = msgspec.structs.replace(fit, long_edge=False, short_edge=False)
    return fit


def exit_paths(data: TrainingData, val: pl.Series) -> ExitPaths | None:
    """The training frame's bars for :func:`fit_exits` (None: the spec has no ATR feature)."""
    f = data.frame
    if ATR_FEATURE not in f.columns:
        return None
    bounds = run_bounds(f["run"].to_numpy())
    end = np.repeat(bounds[1:], np.diff(bounds))
    close = f["close"].to_numpy().astype(np.float64)

    def col(name: str) -> np.ndarray:
        return np.ascontiguousarray(f[name].to_numpy().astype(np.float64))

    return ExitPaths(
        ts=np.ascontiguousarray(epoch_minutes(f["ts"]).astype(np.float64)),
        open=col("open"), high=col("high"), low=col("low"), close=col("close"), end=end,
        atr=np.ascontiguousarray(f[ATR_FEATURE].to_numpy().astype(np.float64) * close),
        rows=np.flatnonzero(val.to_numpy()), interval_minutes=data.interval_minutes,
    )  # fmt: skip


def fit_policy(data: TrainingData, cfg: MemedConfig, p_val: np.ndarray, val: pl.Series) -> EdgeFit | None:
    """The cost-aware policy on the validation split: ``p_val`` the served ensemble's calibrated
    probabilities [validation rows, horizons]. Every candidate horizon (``signals.policy_horizons``, or
    all of the set's) is fitted, the best chosen, then its stops and targets (None: no candidate is a
    horizon of the set)."""
    candidates = [
        h for h in data.horizons if not cfg.signals.policy_horizons or h in cfg.signals.policy_horizons
    ]
    if not candidates:
        return None
    rows = data.frame.filter(val)
    token = rows["token"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    minute = epoch_minutes(rows["ts"]).astype(np.int64)
    bt, sides = cfg.backtest, cfg.signals.sides
    fits = []
    for h in candidates:
        k = data.horizons.index(h)
        block = token * (2**40) + minute // h
        fits.append(fit_edge(p_val[:, k], data.fwd(h, val), h, bt.fee_bps, bt.slippage_bps, sides, block))
    fit = choose_horizon(fits, data.interval_minutes, max(cfg.signals.decision_horizons))
    paths = exit_paths(data, val)
    if paths is None:
        return fit
    return fit_exits(fit, p_val[:, data.horizons.index(fit.horizon)], paths)
