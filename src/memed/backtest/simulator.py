"""Execution simulation: fills, fees, slippage, stops and the portfolio.

* A signal at bar ``t``'s close fills at bar ``t+1``'s open, worse by ``slippage_bps`` plus an impact of
  ``impact_bps x order notional / bar t+1's traded notional`` (close x volume); an order larger than the
  whole bar's traded notional is not filled (counted as ``no_liquidity``).
* Fees: ``fee_bps`` of the notional on entry and on exit.
* Stop-loss and take-profit are checked on the following bars' high and low; when one bar touches both,
  the stop is assumed first. Otherwise the position exits at the close of the bar at the horizon.
* One position per token; the notional is the risk plan's (its units at the signal's close), scaled by
  current equity over the configured equity, and bought at the fill price; total open notional is
  capped at ``max_exposure x equity`` (an order that does not fit is skipped and counted).

Equity is realised: it moves when a position closes. Every trade, with its entry, exit, reason and P&L,
goes to ``trades.parquet``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from memed.config import BacktestConfig

BUY_ACTIONS = ("BUY", "STRONG_BUY")
SELL_ACTIONS = ("SELL", "STRONG_SELL")


@dataclass
class TokenBars:
    ts: np.ndarray  # epoch minutes
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    notional: np.ndarray


def token_bars(bars: pl.DataFrame) -> dict[str, TokenBars]:
    out = {}
    for (token,), g in bars.sort("token", "ts").group_by("token", maintain_order=True):
        out[str(token)] = TokenBars(
            ts=(g["ts"].dt.epoch("s") // 60).to_numpy().astype(np.float64),
            open=g["open"].to_numpy(),
            high=g["high"].to_numpy(),
            low=g["low"].to_numpy(),
            close=g["close"].to_numpy(),
            notional=(g["close"] * g["volume"]).to_numpy(),
        )
    return out


@dataclass
class SimResult:
    trades: pl.DataFrame
    equity: pl.DataFrame  # ts, equity (after each closed trade), exposure
    skipped: dict[str, int] = field(default_factory=dict)
    fees: float = 0.0
    turnover: float = 0.0


def _exit(
    tb: TokenBars, i: int, side: float, stop: float, take: float, deadline: float
) -> tuple[int, float, str]:
    """Scan bars after the entry bar ``i`` for the stop, the take-profit or the horizon."""
    n = len(tb.ts)
    j_end = int(np.searchsorted(tb.ts, deadline, side="right")) - 1
    j_end = min(max(j_end, i), n - 1)
    lo, hi = tb.low[i : j_end + 1], tb.high[i : j_end + 1]
    if side > 0:
        hit_stop = lo <= stop if np.isfinite(stop) else np.zeros(len(lo), bool)
        hit_take = hi >= take if np.isfinite(take) else np.zeros(len(lo), bool)
    else:
        hit_stop = hi >= stop if np.isfinite(stop) else np.zeros(len(lo), bool)
        hit_take = lo <= take if np.isfinite(take) else np.zeros(len(lo), bool)
    either = np.flatnonzero(hit_stop | hit_take)
    if len(either):
        k = int(either[0])
        if hit_stop[k]:  # both in one bar: the stop first
            gap = tb.open[i + k]
            price = min(stop, gap) if side > 0 else max(stop, gap)
            return i + k, price if k > 0 else stop, "stop_loss"
        gap = tb.open[i + k]
        price = max(take, gap) if side > 0 else min(take, gap)
        return i + k, price if k > 0 else take, "take_profit"
    return j_end, float(tb.close[j_end]), "horizon"


def simulate(
    signals: pl.DataFrame,
    bars: dict[str, TokenBars],
    cfg: BacktestConfig,
    *,
    equity0: float,
    hold_minutes: int,
    window_end: dict[int, float] | None = None,
) -> SimResult:
    """Trade the BUY/SELL rows of ``signals`` (token, ts, action, units, stop_loss, take_profit).

    ``window_end`` (optional, fold → epoch minute) forces exits at the end of each test window.
    """
    trades_rows: list[dict[str, object]] = []
    equity = equity0
    curve = [(float("-inf"), equity, 0.0)]
    open_pos: list[tuple[float, int, str]] = []  # heap of (exit_ts, id, token)
    positions: dict[str, dict[str, float]] = {}
    exposure = 0.0
    skipped = {"position_open": 0, "exposure_cap": 0, "no_next_bar": 0, "no_liquidity": 0}
    fees = turnover = 0.0
    rows = signals.filter(pl.col("action").is_in([*BUY_ACTIONS, *SELL_ACTIONS])).sort("ts", "token")
    has_fold = "fold" in rows.columns
    ids = 0

    def close_until(t: float) -> None:
        nonlocal equity, exposure, fees, turnover
        while open_pos and open_pos[0][0] <= t:
            _, _, token = heapq.heappop(open_pos)
            p = positions.pop(token)
            exit_notional = p["units"] * p["exit_price"]
            fee = exit_notional * cfg.fee_bps / 1e4
            pnl = p["side"] * p["units"] * (p["exit_price"] - p["entry_price"]) - fee - p["entry_fee"]
            equity += pnl
            exposure -= p["entry_notional"]
            fees += fee
            turnover += exit_notional
            trades_rows.append({**p, "token": token, "pnl": pnl, "return": pnl / p["entry_notional"]})
            curve.append((p["exit_ts"], equity, exposure))

    for r in rows.iter_rows(named=True):
        t = r["ts"].timestamp() / 60
        close_until(t)  # positions that exited by this signal's bar free their token and exposure
        token = r["token"]
        tb = bars.get(token)
        if token in positions:
            skipped["position_open"] += 1
            continue
        if tb is None:
            skipped["no_next_bar"] += 1
            continue
        i = int(np.searchsorted(tb.ts, t, side="right"))  # the next bar after the signal
        if i >= len(tb.ts):
            skipped["no_next_bar"] += 1
            continue
        side = 1.0 if r["action"] in BUY_ACTIONS else -1.0
        # the plan's notional (units at the signal's close), scaled with equity, bought at the fill
        notional_est = float(r["units"]) * float(r["entry"]) * equity / equity0
        units = notional_est / tb.open[i]
        if exposure + notional_est > cfg.max_exposure * equity:
            skipped["exposure_cap"] += 1
            continue
        bar_notional = float(tb.notional[i])
        if notional_est > bar_notional:  # more than the whole bar traded: no fill
            skipped["no_liquidity"] += 1
            continue
        slip = (cfg.slippage_bps + cfg.impact_bps * notional_est / bar_notional) / 1e4
        entry_price = tb.open[i] * (1 + side * slip)
        entry_notional = units * entry_price
        entry_fee = entry_notional * cfg.fee_bps / 1e4
        deadline = tb.ts[i] + hold_minutes
        if window_end is not None and has_fold:
            deadline = min(deadline, window_end[int(r["fold"])])
        # stops and take-profits keep their distance from the signal's close, moved to the fill
        shift = entry_price - float(r["entry"])
        j, exit_price, why = _exit(
            tb, i, side, float(r["stop_loss"]) + shift, float(r["take_profit"]) + shift, deadline
        )
        exit_price = exit_price * (1 - side * cfg.slippage_bps / 1e4)
        ids += 1
        positions[token] = {
            "side": side,
            "units": units,
            "entry_ts": float(tb.ts[i]),
            "entry_price": entry_price,
            "entry_notional": entry_notional,
            "entry_fee": entry_fee,
            "exit_ts": float(tb.ts[j]),
            "exit_price": exit_price,
        }
        positions[token]["exit_reason_code"] = {"stop_loss": 0, "take_profit": 1, "horizon": 2}[why]
        heapq.heappush(open_pos, (float(tb.ts[j]), ids, token))
        exposure += entry_notional
        fees += entry_fee
        turnover += entry_notional
        curve.append((float(tb.ts[i]), equity, exposure))
    close_until(float("inf"))
    reasons = ("stop_loss", "take_profit", "horizon")
    trades = (
        pl.DataFrame(trades_rows)
        if trades_rows
        else pl.DataFrame(
            schema={
                "token": pl.String,
                "side": pl.Float64,
                "units": pl.Float64,
                "entry_ts": pl.Float64,
                "entry_price": pl.Float64,
                "entry_notional": pl.Float64,
                "entry_fee": pl.Float64,
                "exit_ts": pl.Float64,
                "exit_price": pl.Float64,
                "exit_reason_code": pl.Int64,
                "pnl": pl.Float64,
                "return": pl.Float64,
            }
        )
    )
    if trades.height:
        trades = (
            trades.with_columns(
                pl.col("exit_reason_code")
                .map_elements(lambda c: reasons[c], return_dtype=pl.String)
                .alias("exit_reason"),
                *[
                    (pl.col(c) * 60_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias(c)
                    for c in ("entry_ts", "exit_ts")
                ],
            )
            .drop("exit_reason_code")
            .select("token", pl.exclude("token"))
        )
    eq = pl.DataFrame(
        curve[1:], schema={"ts_min": pl.Float64, "equity": pl.Float64, "exposure": pl.Float64}, orient="row"
    )
    if eq.height:
        eq = (
            eq.sort("ts_min")
            .with_columns(
                (pl.col("ts_min") * 60_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias("ts")
            )
            .drop("ts_min")
            .select("ts", "equity", "exposure")
        )
    return SimResult(trades=trades, equity=eq, skipped=skipped, fees=fees, turnover=turnover)
