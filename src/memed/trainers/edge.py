"""The cost-aware policy, fitted on the validation split: is there an edge after costs, at which horizon,
from what expected return does a trade pay, and where do its stop and target go?

The validation split is cut in two by time. Everything is **chosen on the earlier half**, then
**confirmed on the later half**, which the choice never saw: a short validation window whose tokens
happened to drift up must not pass for an edge.

For a candidate horizon ``h``, the served ensemble's calibrated probability ``p`` at ``h``, and a trade
held for ``h``:

* the sizes of up and down moves at ``h``: ``U = mean(r | r > 0)``, ``D = mean(-r | r < 0)`` with ``r``
  the forward log return;
* the round-trip cost ``c = 2 x (fee_bps + slippage_bps) / 1e4`` (the backtest's own costs);
* each row's expected net return of a long: ``E_long = p U - (1 - p) D - c``; of a short:
  ``E_short = (1 - p) D - p U - c``.

**Margin** (:func:`fit_edge`): among candidate margins (0 and the quantiles of ``E`` that leave 50 % …
0.1 % of the rows), the one whose trades (``E > margin``) made the largest total realised net return
``sum(side x r - c)``, with at least ``MIN_TRADES`` trades spread over at least ``MIN_BETS`` independent
bets (distinct token and ``h``-long period of time) and a positive mean. None: no edge at ``h``.

**Horizon** (:func:`choose_horizon`): the candidate whose best margins made the most per bar of capital,
as an overlapping portfolio (a trade every bar while ``E`` stays high, each with ``1/h`` of the capital:
total x interval / ``h``).

**Stops and targets** (:func:`fit_exits`): sized in units of the horizon's volatility, ``ATR(14) x
sqrt(h / interval)`` (one bar's ATR would put them inside the noise of an ``h``-long hold), the pair of
multiples whose trades, replayed bar by bar under the simulator's own exit rule
(:func:`memed.signals.exits.first_exit`), made the most.

**Confirmation** (:func:`confirm`): the chosen settings trade the later half; the net of every token's
trades per ``h``-long period of time (0 for a period without one) must have a t statistic of at least
``CONFIRM_T``. Otherwise there is **no edge**, and a served ``cost_aware`` policy trades nothing (HOLD,
reason ``no_edge``). Nothing here reads a test row.
"""

from __future__ import annotations

import dataclasses
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
CONFIRM_T = 2.0
"""Least t statistic of the later half's net per period for an edge to be kept."""
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
            stop_k: float, take_k: float, horizon: float, cost: float, out: np.ndarray) -> None:  # fmt: skip
    """Into ``out``: the net log return of each trade entered at ``rows``' closes and held to the stop,
    the target or the horizon (NaN: no bar after the entry, or no volatility)."""
    for q in range(len(rows)):
        r = rows[q]
        side = sides[q]
        c = close[r]
        v = atr[r] * scale
        out[q] = np.nan
        if r + 1 >= end[r] or not (np.isfinite(v) and v > 0.0 and c > 0.0):
            continue
        stop = c - side * stop_k * v
        take = c + side * take_k * v
        _, price, _ = first_exit(
            ts, open_, high, low, close, r + 1, end[r], side, stop, take, ts[r] + horizon
        )
        out[q] = side * np.log(max(price, 1e-300) / c) - cost


def _entries(fit: EdgeFit, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (indices into ``p``) the fitted policy trades, and their sides (+1 long, -1 short)."""
    e_long = expected_long(p, fit.up_move, fit.down_move, fit.cost)
    e_short = -e_long - 2 * fit.cost
    buy = fit.long_edge & (e_long > fit.long_margin)
    sell = fit.short_edge & (e_short > fit.short_margin) & ~buy
    picked = np.flatnonzero(buy | sell)
    return picked, np.where(buy[picked], 1.0, -1.0)


def trade_nets(fit: EdgeFit, paths: ExitPaths, rows: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Net log return of trades at frame ``rows`` with the fit's stop and target (NaN: not replayable)."""
    out = np.empty(len(rows))
    _replay(paths.ts, paths.open, paths.high, paths.low, paths.close, paths.end, paths.atr,
            np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(sides), _scale(fit, paths),
            fit.stop_sigma, fit.target_sigma, float(fit.horizon), fit.cost, out)  # fmt: skip
    return out


def _scale(fit: EdgeFit, paths: ExitPaths) -> float:
    return float(np.sqrt(fit.horizon / paths.interval_minutes))


def fit_exits(fit: EdgeFit, p: np.ndarray, paths: ExitPaths) -> EdgeFit:
    """The stop and target multiples (of the horizon's volatility) whose trades made the most on the
    rows ``paths.rows`` (``p``: their decision probabilities). A fit without an edge is returned as it
    is; one whose trades lose with every pair loses its edge."""
    if not (fit.long_edge or fit.short_edge):
        return fit
    picked, sides = _entries(fit, p)
    if len(picked) > MAX_PATHS:
        keep = np.linspace(0, len(picked) - 1, MAX_PATHS).astype(np.int64)
        picked, sides = picked[keep], sides[keep]
    rows = paths.rows[picked]
    best: tuple[float, float, float] | None = None
    for s in STOP_SIGMAS:
        for t in TARGET_SIGMAS:
            nets = trade_nets(msgspec.structs.replace(fit, stop_sigma=s, target_sigma=t), paths, rows, sides)
            nets = nets[np.isfinite(nets)]
            if len(nets) and (best is None or nets.mean() > best[2]):
                best = (s, t, float(nets.mean()))
    if best is None:
        return fit
    fit = msgspec.structs.replace(fit, stop_sigma=best[0], target_sigma=best[1], exit_net_mean=best[2])
    if best[2] <= 0:  # held to the horizon it paid; with any stop and target it would not have: no edge
        fit = msgspec.structs.replace(fit, long_edge=False, short_edge=False)
    return fit


def t_statistic(nets: np.ndarray, period: np.ndarray, periods: int) -> float:
    """t statistic of the per-period sums of ``nets`` (``period``: each trade's period code, 0 ..
    ``periods - 1``; a period without a trade sums to 0); 0 with fewer than two periods."""
    if periods < 2:  # noqa: PLR2004
        return 0.0
    per = np.bincount(period, weights=nets, minlength=periods)
    sd = float(per.std(ddof=1))
    if sd == 0.0:
        return 0.0
    return float(per.mean() / (sd / np.sqrt(periods)))


def confirm(fit: EdgeFit, p: np.ndarray, fwd: np.ndarray, minute: np.ndarray, paths: ExitPaths | None,
            rows: np.ndarray) -> EdgeFit:  # fmt: skip
    """Trade the fitted settings on rows the choice never saw (``p``, ``fwd``, ``minute`` of each; ``rows``
    their frame rows for replay with the stops and targets, when ``paths`` is given, else held to the
    horizon): the edge is kept only if the net per period has a t statistic of ``CONFIRM_T`` or more."""
    if not (fit.long_edge or fit.short_edge):
        return fit
    picked, sides = _entries(fit, p)
    if paths is not None and fit.stop_sigma > 0:
        nets = trade_nets(fit, paths, rows[picked], sides)
    else:
        nets = sides * fwd[picked] - fit.cost
    known = np.isfinite(nets)
    nets, picked = nets[known], picked[known]
    codes = np.floor(minute / fit.horizon).astype(np.int64)
    first = int(codes.min()) if len(codes) else 0
    periods = int(codes.max()) - first + 1 if len(codes) else 0
    t = t_statistic(nets, codes[picked] - first, periods)
    mean = float(nets.mean()) if len(nets) else 0.0
    fit = msgspec.structs.replace(fit, confirm_trades=len(nets), confirm_net_mean=mean, confirm_t=t)
    if t < CONFIRM_T or mean <= 0:
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
    probabilities [validation rows, horizons]. Chosen on the split's earlier half (every candidate
    horizon, ``signals.policy_horizons`` or all of the set's; its margins; its stops and targets),
    confirmed on the later half. None: no candidate is a horizon of the set."""
    candidates = [
        h for h in data.horizons if not cfg.signals.policy_horizons or h in cfg.signals.policy_horizons
    ]
    if not candidates:
        return None
    rows = data.frame.filter(val)
    token = rows["token"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    minute = epoch_minutes(rows["ts"]).astype(np.int64)
    later = minute >= np.median(minute)  # the later half of the rows by time
    early = ~later
    paths = exit_paths(data, val)
    frame_rows = paths.rows if paths is not None else np.flatnonzero(val.to_numpy())
    bt, sides = cfg.backtest, cfg.signals.sides
    fits = []
    for h in candidates:
        k = data.horizons.index(h)
        bet = token * (2**40) + minute // h
        fits.append(fit_edge(p_val[early, k], data.fwd(h, val)[early], h, bt.fee_bps, bt.slippage_bps, sides,
                             bet[early]))  # fmt: skip
    fit = choose_horizon(fits, data.interval_minutes, max(cfg.signals.decision_horizons))
    k = data.horizons.index(fit.horizon)
    if paths is not None:
        fit = fit_exits(fit, p_val[early, k], dataclasses.replace(paths, rows=frame_rows[early]))
    return confirm(fit, p_val[later, k], data.fwd(fit.horizon, val)[later], minute[later].astype(np.float64),
                   paths, frame_rows[later])  # fmt: skip
