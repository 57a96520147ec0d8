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
from numba import njit

from memed.config import BacktestConfig
from memed.data.frames import by_token, epoch_minutes, minutes_to_datetime
from memed.signals.exits import EXIT_HORIZON, EXIT_REASONS, EXIT_SIGNAL, first_exit

BUY_ACTIONS = ("BUY", "STRONG_BUY")
SELL_ACTIONS = ("SELL", "STRONG_SELL")


@dataclass
class TokenBars:
    """One token's bars (tests and callers that build markets by hand)."""

    ts: np.ndarray  # epoch minutes
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    notional: np.ndarray


_Packed = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class MarketBars:
    """Every token's bars end to end, as the simulator's kernel reads them: token ``k``'s rows are
    ``starts[k] .. starts[k + 1]``, in time order. Built once per backtest and shared by every strategy."""

    names: list[str]
    starts: np.ndarray
    ts: np.ndarray  # epoch minutes
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    notional: np.ndarray  # close x volume

    def arrays(self) -> _Packed:
        return self.starts, self.ts, self.open, self.high, self.low, self.close, self.notional

    @classmethod
    def from_tokens(cls, bars: dict[str, TokenBars]) -> MarketBars:
        names = list(bars)
        sizes = [len(bars[t].ts) for t in names]

        def col(c: str) -> np.ndarray:
            if not names:
                return np.empty(0)
            return np.concatenate([getattr(bars[t], c) for t in names]).astype(np.float64)

        starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        return cls(names, starts, col("ts"), col("open"), col("high"), col("low"), col("close"),
                   col("notional"))  # fmt: skip


def market_bars(bars: pl.DataFrame) -> MarketBars:
    """The simulator's view of a canonical bar frame (any order)."""
    bars, starts = by_token(bars)
    tokens = bars["token"]
    f64 = pl.Float64
    cols = bars.select(
        pl.col("open", "high", "low", "close").cast(f64),
        (pl.col("close") * pl.col("volume")).cast(f64).alias("notional"),
    )
    return MarketBars(
        names=[str(t) for t in tokens.gather(starts[:-1]).to_list()],
        starts=starts,
        ts=epoch_minutes(bars["ts"]),
        open=cols["open"].to_numpy(),
        high=cols["high"].to_numpy(),
        low=cols["low"].to_numpy(),
        close=cols["close"].to_numpy(),
        notional=cols["notional"].to_numpy(),
    )


@dataclass
class SimResult:
    trades: pl.DataFrame
    equity: pl.DataFrame  # ts, equity (after each closed trade), exposure
    skipped: dict[str, int] = field(default_factory=dict)
    fees: float = 0.0
    turnover: float = 0.0


@njit(cache=True)
def _run(
    sig_ts: np.ndarray,
    sig_tok: np.ndarray,
    sig_side: np.ndarray,
    sig_units: np.ndarray,
    sig_entry: np.ndarray,
    sig_stop: np.ndarray,
    sig_take: np.ndarray,
    sig_cap: np.ndarray,
    sig_exit: np.ndarray,
    sig_hold: np.ndarray,
    bars: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    equity0: float,
    fee_bps: float,
    slippage_bps: float,
    impact_bps: float,
    max_exposure: float,
    trades: np.ndarray,
    curve: np.ndarray,
    counts: np.ndarray,
) -> tuple[int, int, float, float]:
    """The event loop over signals in time order. ``trades`` rows (in closing order): token, side, units,
    entry_ts, entry_price, entry_notional, entry_fee, exit_ts, exit_price, reason, pnl, return;
    ``curve`` rows: ts, equity, exposure; ``counts``: position_open, exposure_cap, no_next_bar,
    no_liquidity. Returns (trades, curve rows, fees, turnover)."""
    starts, ts, open_, high, low, close, notional = bars
    n_tok = len(starts) - 1
    pos = np.full((n_tok, 10), np.nan)  # the open position per token (row 0 NaN: none)
    heap = [(np.inf, -1, -1)]  # (exit_ts, id, token); the sentinel keeps the list's type
    heap.pop()
    equity = equity0
    exposure = 0.0
    fees = 0.0
    turnover = 0.0
    n_tr = 0
    n_cv = 0
    ids = 0
    for r in range(len(sig_ts) + 1):
        t = sig_ts[r] if r < len(sig_ts) else np.inf
        while len(heap) > 0 and heap[0][0] <= t:  # positions that exited by this bar free their token
            item = heapq.heappop(heap)
            tok = item[2]
            p = pos[tok]
            exit_notional = p[1] * p[7]
            fee = exit_notional * fee_bps / 1e4
            pnl = p[0] * p[1] * (p[7] - p[3]) - fee - p[5]
            equity += pnl
            exposure -= p[4]
            fees += fee
            turnover += exit_notional
            trades[n_tr, 0] = tok
            trades[n_tr, 1:10] = p[:9]
            trades[n_tr, 10] = pnl
            trades[n_tr, 11] = pnl / p[4]
            trades[n_tr, 12] = pnl + fee + p[5] + p[9]  # before fees and slippage
            trades[n_tr, 13] = p[9]
            n_tr += 1
            curve[n_cv, 0] = p[6]
            curve[n_cv, 1] = equity
            curve[n_cv, 2] = exposure
            n_cv += 1
            pos[tok, 0] = np.nan
        if r == len(sig_ts):
            break
        tok = sig_tok[r]
        if tok >= 0 and not np.isnan(pos[tok, 0]):
            counts[0] += 1
            continue
        if tok < 0:
            counts[2] += 1
            continue
        a, end = starts[tok], starts[tok + 1]
        i = a + np.searchsorted(ts[a:end], t, side="right")  # the next bar after the signal
        if i >= end:
            counts[2] += 1
            continue
        side = sig_side[r]
        # the plan's notional (units at the signal's close), scaled with equity, bought at the fill
        notional_est = sig_units[r] * sig_entry[r] * equity / equity0
        units = notional_est / open_[i]
        if exposure + notional_est > max_exposure * equity:
            counts[1] += 1
            continue
        bar_notional = notional[i]
        if notional_est > bar_notional:  # more than the whole bar traded: no fill
            counts[3] += 1
            continue
        slip = (slippage_bps + impact_bps * notional_est / bar_notional) / 1e4
        entry_price = open_[i] * (1 + side * slip)
        entry_notional = units * entry_price
        entry_fee = entry_notional * fee_bps / 1e4
        deadline = min(ts[i] + sig_hold[r], sig_cap[r], sig_exit[r])
        # stops and take-profits keep their distance from the signal's close, moved to the fill
        shift = entry_price - sig_entry[r]
        j, exit_price, why = first_exit(ts, open_, high, low, close, i, end, side, sig_stop[r] + shift,
                                   sig_take[r] + shift, deadline)  # fmt: skip
        if why == EXIT_HORIZON and deadline == sig_exit[r]:
            why = EXIT_SIGNAL  # closed by the token's next exit signal
        raw_exit = exit_price
        exit_price = exit_price * (1 - side * slippage_bps / 1e4)
        ids += 1
        p = pos[tok]
        p[0], p[1], p[2], p[3], p[4] = side, units, ts[i], entry_price, entry_notional
        p[5], p[6], p[7], p[8] = entry_fee, ts[j], exit_price, why
        p[9] = units * (abs(entry_price - open_[i]) + abs(raw_exit - exit_price))  # slippage paid
        heapq.heappush(heap, (ts[j], ids, tok))
        exposure += entry_notional
        fees += entry_fee
        turnover += entry_notional
        curve[n_cv, 0] = ts[i]
        curve[n_cv, 1] = equity
        curve[n_cv, 2] = exposure
        n_cv += 1
    return n_tr, n_cv, fees, turnover


_PLAN = ("units", "entry", "stop_loss", "take_profit")


def _long_only(rows: pl.DataFrame) -> pl.DataFrame:
    """The BUY rows (time, then token order), each with ``exit_ts``: the token's first SELL after it."""
    exits = rows.filter(pl.col("action").is_in(SELL_ACTIONS)).select("token", pl.col("ts").alias("exit_ts"))
    entries = rows.filter(pl.col("action").is_in(BUY_ACTIONS)).with_row_index("_order")
    joined = entries.sort("ts").join_asof(
        exits.sort("exit_ts"), left_on="ts", right_on="exit_ts", by="token", strategy="forward",
        allow_exact_matches=False, check_sortedness=False,  # sorted by ts; polars cannot check per token
    )  # fmt: skip
    return joined.sort("_order").drop("_order")


def simulate(
    signals: pl.DataFrame,
    market: MarketBars,
    cfg: BacktestConfig,
    *,
    equity0: float,
    hold_minutes: int | None = None,
    window_end: dict[int, float] | None = None,
    sides: str = "long",
) -> SimResult:
    """Trade the BUY/SELL rows of ``signals`` (token, ts, action, units, stop_loss, take_profit).

    A position is held at most ``hold_minutes``; None: each signal's own ``hold_minutes`` column (the
    decision horizon its model set's policy chose).
    ``window_end`` (optional, fold → epoch minute) forces exits at the end of each test window.
    ``sides``: ``long`` (``signals.sides``' default) opens only longs, and a SELL closes the token's open
    long at its bar's close (exit reason ``signal``); ``both`` opens a short on a SELL.
    """
    names = market.names
    has_fold = window_end is not None and "fold" in signals.columns
    trades_only = signals.select(
        "token",
        "ts",
        "action",
        "units",
        "entry",
        "stop_loss",
        "take_profit",
        *(["fold"] * has_fold),
        (pl.lit(hold_minutes) if hold_minutes is not None else pl.col("hold_minutes")).alias("hold"),
    ).filter(pl.col("action").is_in([*BUY_ACTIONS, *SELL_ACTIONS]))
    if sides == "long":
        trades_only = _long_only(trades_only)
    step = pl.col("ts").diff()
    in_order = trades_only.select(  # as the replay writes them: no sort needed
        ((step > 0) | ((step == 0) & (pl.col("token") > pl.col("token").shift()))).fill_null(True).all()
    ).item()
    if not in_order:
        trades_only = trades_only.sort("ts", "token", maintain_order=True)
    rows = trades_only.select(  # as the kernel takes them
        (pl.col("ts").dt.epoch("us") / 60e6).cast(pl.Float64).alias("ts"),
        pl.col("token").replace_strict(names, range(len(names)), default=-1, return_dtype=pl.Int64),
        pl.when(pl.col("action").is_in(BUY_ACTIONS)).then(1.0).otherwise(-1.0).alias("side"),
        *[pl.col(c).cast(pl.Float64).fill_null(np.nan) for c in _PLAN],
        *(["fold"] * has_fold),
        pl.col("hold").cast(pl.Float64),
    )
    n = rows.height
    cap = np.full(n, np.inf)
    exit_at = np.full(n, np.inf)
    if sides == "long" and n:
        exit_at = (trades_only["exit_ts"].dt.epoch("us") / 60e6).cast(pl.Float64).fill_null(np.inf).to_numpy()
    if window_end is not None and has_fold and n:
        cap = np.array([window_end[int(f)] for f in rows["fold"].to_list()])
    trades = np.empty((n, 14))
    curve = np.empty((2 * n, 3))
    counts = np.zeros(4, dtype=np.int64)
    n_tr, n_cv, fees, turnover = _run(
        rows["ts"].to_numpy(),
        rows["token"].to_numpy(),
        rows["side"].to_numpy(),
        rows["units"].to_numpy(),
        rows["entry"].to_numpy(),
        rows["stop_loss"].to_numpy(),
        rows["take_profit"].to_numpy(),
        cap,
        exit_at,
        rows["hold"].to_numpy(),
        market.arrays(),
        float(equity0),
        float(cfg.fee_bps),
        float(cfg.slippage_bps),
        float(cfg.impact_bps),
        float(cfg.max_exposure),
        trades,
        curve,
        counts,
    )
    skipped = dict(
        zip(("position_open", "exposure_cap", "no_next_bar", "no_liquidity"), counts.tolist(), strict=True)
    )
    return SimResult(
        trades=_trade_frame(trades[:n_tr], names),
        equity=_equity_frame(curve[:n_cv]),
        skipped=skipped,
        fees=fees,
        turnover=turnover,
    )


def _trade_frame(rows: np.ndarray, names: list[str]) -> pl.DataFrame:
    cols = (
        "token", "side", "units", "entry_ts", "entry_price", "entry_notional", "entry_fee", "exit_ts",
        "exit_price", "exit_reason", "pnl", "return", "gross_pnl", "slippage",
    )  # fmt: skip
    data = {c: rows[:, k] for k, c in enumerate(cols)}
    token_names = pl.Series(names, dtype=pl.String)
    reasons = pl.Series(EXIT_REASONS, dtype=pl.String)
    frame = pl.DataFrame(data)
    return frame.with_columns(
        token_names.gather(frame["token"].cast(pl.Int64)).alias("token"),
        reasons.gather(frame["exit_reason"].cast(pl.Int64)).alias("exit_reason"),
        minutes_to_datetime("entry_ts"),
        minutes_to_datetime("exit_ts"),
    ).select(*[c for c in cols if c != "exit_reason"], "exit_reason")


def _equity_frame(curve: np.ndarray) -> pl.DataFrame:
    eq = pl.DataFrame({"ts": curve[:, 0], "equity": curve[:, 1], "exposure": curve[:, 2]})
    return eq.sort("ts", maintain_order=True).with_columns(minutes_to_datetime("ts"))
