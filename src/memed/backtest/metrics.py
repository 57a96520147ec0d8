"""Trading metrics from trades and the realised equity curve (hourly resampling for ratios)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from memed.trainers.uncertainty import LEVEL, MIN_DAYS, day_index, day_weights

HOURS_PER_YEAR = 24 * 365
HOUR_US = 3_600_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(t: datetime) -> int:
    """Microseconds since the epoch (a naive datetime is taken as UTC, as the frames' timestamps are)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class EquityEvents:
    """A realised equity curve as arrays: microseconds since the epoch (ascending) and equity."""

    ts: np.ndarray
    equity: np.ndarray

    @classmethod
    def of(cls, equity: pl.DataFrame) -> EquityEvents:
        if equity.is_empty():
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0))
        eq = equity.select("ts", "equity").sort("ts", maintain_order=True)
        return cls(eq["ts"].dt.epoch("us").to_numpy(), eq["equity"].to_numpy().astype(np.float64))

    def hourly(self, equity0: float, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
        """(grid, equity): every hour from ``start`` to ``end`` inclusive (µs), with the equity realised
        by then (the last event at or before the hour; ``equity0`` before the first)."""
        grid = np.arange(epoch_us(start), epoch_us(end) + 1, HOUR_US, dtype=np.int64)
        at = np.searchsorted(self.ts, grid, side="right") - 1
        values = self.equity[np.maximum(at, 0)] if len(self.ts) else np.zeros(len(grid))
        return grid, np.where(at >= 0, values, equity0)


def hourly_equity(equity: pl.DataFrame, equity0: float, start: datetime, end: datetime) -> pl.DataFrame:
    """Realised equity sampled at every hour of ``[start, end]`` (forward filled)."""
    grid, values = EquityEvents.of(equity).hourly(equity0, start, end)
    return pl.DataFrame({"ts": pl.Series(grid).cast(pl.Datetime("us", "UTC")), "equity": values})


@dataclass(frozen=True)
class TradeArrays:
    """The trade columns the metrics read: entry time (µs), P&L, minutes held, entry notional."""

    entry_us: np.ndarray
    pnl: np.ndarray
    held_minutes: np.ndarray
    notional: np.ndarray
    gross: np.ndarray
    """P&L before fees and slippage."""
    slippage: np.ndarray

    @classmethod
    def of(cls, trades: pl.DataFrame) -> TradeArrays:
        if not trades.height:
            z = np.zeros(0)
            return cls(np.zeros(0, dtype=np.int64), z, z, z, z, z)
        dur = (trades["exit_ts"] - trades["entry_ts"]).dt.total_minutes().to_numpy() + 1
        gross = trades["gross_pnl"].to_numpy() if "gross_pnl" in trades.columns else trades["pnl"].to_numpy()
        slip = trades["slippage"].to_numpy() if "slippage" in trades.columns else np.zeros(trades.height)
        return cls(trades["entry_ts"].dt.epoch("us").to_numpy(), trades["pnl"].to_numpy(), dur,
                   trades["entry_notional"].to_numpy(), gross, slip)  # fmt: skip

    def entered(self, start: datetime, end: datetime) -> TradeArrays:
        """The trades entered in ``[start, end)``."""
        m = (self.entry_us >= epoch_us(start)) & (self.entry_us < epoch_us(end))
        return TradeArrays(self.entry_us[m], self.pnl[m], self.held_minutes[m], self.notional[m],
                           self.gross[m], self.slippage[m])  # fmt: skip


def trading_metrics(
    trades: pl.DataFrame | TradeArrays,
    equity: pl.DataFrame | EquityEvents,
    equity0: float,
    start: datetime,
    end: datetime,
    fees: float,
    turnover: float,
) -> dict[str, float]:
    tr = trades if isinstance(trades, TradeArrays) else TradeArrays.of(trades)
    events = equity if isinstance(equity, EquityEvents) else EquityEvents.of(equity)
    curve = events.hourly(equity0, start, end)[1]
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
    pnl = tr.pnl
    gains, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    held = float(np.sum(tr.held_minutes * tr.notional)) if len(pnl) else 0.0
    span_min = max((end - start).total_seconds() / 60, 1.0)
    return {
        "total_return": total,
        "annualised_return": annual,
        "sharpe": mean / std * math.sqrt(HOURS_PER_YEAR) if std > 0 else 0.0,
        "sharpe_daily": daily_sharpe(curve),
        "sortino": mean / dstd * math.sqrt(HOURS_PER_YEAR) if dstd > 0 else 0.0,
        "calmar": annual / dd if dd > 0 else 0.0,
        "max_drawdown": dd,
        "win_rate": float(np.mean(pnl > 0)) if len(pnl) else 0.0,
        "profit_factor": float(gains / losses) if losses > 0 else (float("inf") if gains > 0 else 0.0),
        "trades": float(len(pnl)),
        "exposure": held / (span_min * base),
        "turnover": turnover / base,
        "fees_paid": fees,
        "gross_pnl": float(tr.gross.sum()),
        "slippage_paid": float(tr.slippage.sum()),
        "final_equity": final,
    }


def daily_sharpe(hourly: np.ndarray) -> float:
    """Annualised Sharpe ratio of the daily returns of an hourly equity curve (every 24th point from the
    first): hourly returns of realised equity are mostly zero and autocorrelated, which inflates the
    hourly figure; the daily one is the figure traders compare. 0 with fewer than two days or no
    variation."""
    days = hourly[::24]
    if len(days) < 3:  # noqa: PLR2004 (two daily returns at least)
        return 0.0
    rets = np.diff(days) / days[:-1]
    std = float(np.std(rets))
    return float(np.mean(rets)) / std * math.sqrt(365) if std > 0 else 0.0


def trade_breakdown(trades: pl.DataFrame, by: str) -> list[dict[str, float | str]]:
    """The trades grouped by ``by`` (``exit_reason``, ``token``): count, win rate, mean and total return
    per trade, total P&L and median minutes held, largest P&L first."""
    if not trades.height:
        return []
    held = (pl.col("exit_ts") - pl.col("entry_ts")).dt.total_minutes()
    table = trades.group_by(by).agg(
        pl.len().cast(pl.Float64).alias("trades"),
        (pl.col("pnl") > 0).mean().alias("win_rate"),
        pl.col("return").mean().alias("mean_return"),
        pl.col("pnl").sum().alias("pnl"),
        held.median().cast(pl.Float64).alias("median_minutes"),
    )
    rows: list[dict[str, float | str]] = table.sort("pnl", by, descending=[True, False]).to_dicts()
    return rows


def trade_expectancy(trades: pl.DataFrame, seed: int = 0) -> dict[str, dict[str, float | None]]:
    """Mean net return per trade (after fees and slippage), for all trades and per side, with its 95 %
    day-block interval: whole entry days are resampled with replacement (a day's trades are correlated:
    one market, overlapping holds), and each draw's mean is its total over its count."""
    out: dict[str, dict[str, float | None]] = {}
    if not trades.height:
        return out
    minutes = (trades["entry_ts"].dt.epoch("s").to_numpy() / 60.0).astype(np.float64)
    days = day_index(minutes)
    n_days = int(days.max()) + 1
    weights = day_weights(n_days, seed=seed)
    ret = trades["return"].to_numpy().astype(np.float64)
    side = trades["side"].to_numpy()
    for name, keep in (("all", np.ones(len(ret), bool)), ("long", side > 0), ("short", side < 0)):
        if not keep.any():
            continue
        total = np.bincount(days[keep], weights=ret[keep], minlength=n_days)
        count = np.bincount(days[keep], minlength=n_days).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            draws = (weights @ total) / (weights @ count)
        draws = draws[np.isfinite(draws)]
        lo, hi = (None, None)
        if len(np.unique(days[keep])) >= MIN_DAYS and len(draws) >= MIN_DAYS:
            lo, hi = (float(v) for v in np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
        out[name] = {"trades": float(keep.sum()), "mean_return": float(ret[keep].mean()), "lo": lo, "hi": hi}
    return out
