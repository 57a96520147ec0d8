"""Trading metrics from trades and the realised equity curve (hourly resampling for ratios)."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import polars as pl

HOURS_PER_YEAR = 24 * 365


def hourly_equity(equity: pl.DataFrame, equity0: float, start: datetime, end: datetime) -> pl.DataFrame:
    """Realised equity sampled at every hour of ``[start, end]`` (forward filled)."""
    grid = pl.DataFrame({"ts": pl.datetime_range(start, end, "1h", time_zone="UTC", eager=True)})
    if equity.is_empty():
        return grid.with_columns(pl.lit(equity0).alias("equity"))
    joined = grid.join_asof(equity.select("ts", "equity").sort("ts"), on="ts", strategy="backward")
    return joined.with_columns(pl.col("equity").fill_null(equity0))


def trading_metrics(
    trades: pl.DataFrame,
    equity: pl.DataFrame,
    equity0: float,
    start: datetime,
    end: datetime,
    fees: float,
    turnover: float,
) -> dict[str, float]:
    curve = hourly_equity(equity, equity0, start, end)["equity"].to_numpy()
    final = float(curve[-1]) if len(curve) else equity0
    base = float(curve[0]) if len(curve) else equity0  # equity when the period starts
    total = final / base - 1.0
    years = max((end - start).total_seconds() / (365 * 86400), 1e-9)
    annual = (1 + total) ** (1 / years) - 1 if total > -1 else -1.0
    rets = np.diff(curve) / curve[:-1] if len(curve) > 1 else np.zeros(0)
    std = float(np.std(rets)) if len(rets) else 0.0
    down = rets[rets < 0]
    dstd = float(np.sqrt(np.mean(down**2))) if len(down) else 0.0
    mean = float(np.mean(rets)) if len(rets) else 0.0
    peak = np.maximum.accumulate(curve) if len(curve) else np.array([equity0])
    dd = float(np.max(1 - curve / peak)) if len(curve) else 0.0
    pnl = trades["pnl"].to_numpy() if trades.height else np.zeros(0)
    gains, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    held = 0.0
    if trades.height:
        dur = (trades["exit_ts"] - trades["entry_ts"]).dt.total_minutes().to_numpy() + 1
        held = float(np.sum(dur * trades["entry_notional"].to_numpy()))
    span_min = max((end - start).total_seconds() / 60, 1.0)
    return {
        "total_return": total,
        "annualised_return": annual,
        "sharpe": mean / std * math.sqrt(HOURS_PER_YEAR) if std > 0 else 0.0,
        "sortino": mean / dstd * math.sqrt(HOURS_PER_YEAR) if dstd > 0 else 0.0,
        "calmar": annual / dd if dd > 0 else 0.0,
        "max_drawdown": dd,
        "win_rate": float(np.mean(pnl > 0)) if len(pnl) else 0.0,
        "profit_factor": float(gains / losses) if losses > 0 else (float("inf") if gains > 0 else 0.0),
        "trades": float(len(pnl)),
        "exposure": held / (span_min * base),
        "turnover": turnover / base,
        "fees_paid": fees,
        "final_equity": final,
    }
