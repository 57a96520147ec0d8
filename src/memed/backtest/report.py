"""``report.html``: one self-contained page (inline SVG, no script, no network)."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from memed.backtest.charts import chart, histogram, reliability_plot
from memed.backtest.metrics import hourly_equity
from memed.backtest.plan import Fold
from memed.backtest.simulator import SimResult


def _ci(m: dict[str, Any], key: str) -> str:
    """A metric with its interval where it has one: ``0.5312 [0.5101, 0.5520]``."""
    lo, hi = m.get(f"{key}_lo"), m.get(f"{key}_hi")
    text = _f(m.get(key))
    return text + (f" [{_f(lo)}, {_f(hi)}]" if lo is not None and hi is not None else "")


TOP_TOKENS = 15
"""Tokens listed first in the report's per-token table (then the 5 with the smallest P&L)."""


def _reliability_cells(bins: list[dict[str, Any]]) -> list[str]:
    """Ten cells, one per p_up decile: ``rate [lo, hi] (rows)``; empty where no row fell."""
    cells = [""] * 10
    for b in bins:
        k = min(round(b["lo"] * 10), 9)
        ci = f" [{b['rate_lo']:.2f}, {b['rate_hi']:.2f}]" if b.get("rate_lo") is not None else ""
        cells[k] = f"{b['rate']:.2f}{ci} ({b['rows']:,})"
    return cells


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _f(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "&ndash;"
    return f"{v:.2%}" if pct else f"{v:.4f}"


def write_report(
    path: Path, metrics: dict[str, Any], sims: dict[str, SimResult], equity0: float, folds: list[Fold]
) -> None:
    start: datetime = min(f.test_start for f in folds)
    end: datetime = max(f.test_end for f in folds)
    eq_series, dd_series = {}, {}
    for name, sim in sims.items():
        curve = hourly_equity(sim.equity, equity0, start, end)
        x = curve["ts"].dt.epoch("s").to_numpy().astype(float)
        y = curve["equity"].to_numpy()
        eq_series[name] = (x, y)
        dd_series[name] = (x, -(1 - y / np.maximum.accumulate(y)))
    trading = metrics["trading"]
    keys = [
        "total_return",
        "annualised_return",
        "sharpe",
        "sharpe_daily",
        "sortino",
        "calmar",
        "max_drawdown",
        "win_rate",
        "profit_factor",
        "trades",
        "exposure",
        "turnover",
        "gross_pnl",
        "fees_paid",
        "slippage_paid",
    ]
    pct = {"total_return", "annualised_return", "max_drawdown", "win_rate", "exposure"}
    trade_rows = [[html.escape(n)] + [_f(trading[n].get(k), k in pct) for k in keys] for n in trading]
    hz = metrics["horizons"]
    auc_rows = [
        [f"{h} m", _ci(hz[h]["model"], "roc_auc")]
        + [
            _ci(hz[h].get(m, {}), "roc_auc")
            for m in ("fitted_logistic", "majority", "persistence", "reversal")
        ]
        + [_ci(hz[h]["model"], "roc_auc_vs_fitted_logistic"), _ci(hz[h]["model"], "ece"),
           f"{int(hz[h]['model']['n']):,}"]
        for h in hz
    ]  # fmt: skip
    breakdown_cols = ["trades", "win_rate", "mean_return", "pnl", "median_minutes"]
    pct_cols = {"win_rate", "mean_return"}

    def cell(r: dict[str, Any], c: str) -> str:
        return f"{int(r[c]):,}" if c in ("trades", "median_minutes") else _f(r[c], c in pct_cols)

    def breakdown(rows: list[dict[str, Any]], key: str, limit: int) -> list[list[str]]:
        return [[html.escape(str(r[key]))] + [cell(r, c) for c in breakdown_cols] for r in rows[:limit]]

    exit_rows = breakdown(metrics.get("exit_reasons", []), "exit_reason", 10)
    token_list = metrics.get("tokens", [])
    token_rows = breakdown(token_list, "token", TOP_TOKENS) + breakdown(
        token_list[TOP_TOKENS:][-5:], "token", 5
    )
    token_note = (
        ""
        if len(token_list) <= TOP_TOKENS + 5
        else "; the 15 with the largest P&amp;L and the 5 with the smallest"
    )
    reliability_rows = [[f"{h} m", *_reliability_cells(hz[h].get("reliability", []))] for h in hz]
    fold_rows = []
    for fm in metrics["folds"]:
        f = folds[fm["fold"]]
        t = fm["trading"]["model"]
        aucs = " ".join(f"{h}m {_f(v['model']['roc_auc'])}" for h, v in fm["horizons"].items())
        fold_rows.append(
            [
                str(f.index),
                f"{f.test_start:%Y-%m-%d %H:%M} → {f.test_end:%Y-%m-%d %H:%M}",
                _f(t["total_return"], True),
                _f(t["max_drawdown"], True),
                f"{int(t['trades'])}",
                aucs,
            ]
        )
    expectancy_rows = [
        [side, f"{int(e['trades']):,}", _f(e["mean_return"], True)
         + (f" [{_f(e['lo'], True)}, {_f(e['hi'], True)}]" if e.get("lo") is not None else "")]
        for side, e in metrics.get("per_trade", {}).items()
    ]  # fmt: skip
    policy_rows = [
        [f"{r['folds'][0]}-{r['folds'][-1]}", html.escape(r["model_set"]), f"{r['horizon']} m",
         ", ".join(r["edge"]) or "no edge", f"{r['stop_sigma']:g} / {r['target_sigma']:g}" if r["edge"] else "&ndash;",
         f"{r['confirm_t']:.1f} ({r['confirm_trades']:,} trades)" if r["confirm_trades"] else "&ndash;"]
        for r in metrics.get("policy", [])
    ]  # fmt: skip
    decision = {str(r["horizon"]) for r in metrics.get("policy", [])} or set(hz)  # the policies' horizons
    curves = {f"{h} m": hz[h].get("reliability", []) for h in hz if h in decision}
    warnings = "".join(f'<p class="warn">⚠ {html.escape(w)}</p>' for w in metrics.get("warnings", []))
    returns = sims["model"].trades["return"].to_numpy() if sims["model"].trades.height else np.zeros(0)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>memed backtest</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#1f2328}} table{{border-collapse:collapse;margin:8px 0 20px}}
td,th{{border:1px solid #d0d7de;padding:4px 8px;font-size:13px;text-align:right}} th{{background:#f6f8fa}}
.warn{{color:#9a6700;font-weight:600}} .chart{{border:1px solid #d0d7de;background:#fff}}</style></head><body>
<h1>memed walk-forward backtest</h1>
<p>{len(folds)} folds, test {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC; model sets {html.escape(", ".join(metrics["model_sets"]))};
config {html.escape(metrics["config_hash"])}. Equity is realised (it moves when positions close).</p>{warnings}
{chart("Equity", eq_series, "{:,.0f}", "equity")}
{chart("Drawdown", dd_series, "{:.1%}", "drawdown")}
<h2>Trading, model and baselines (same simulator)</h2>{_table(["strategy", *keys], trade_rows)}
<h2>Direction: ROC AUC per horizon against baselines</h2>
<p>95 % day-block bootstrap intervals in brackets (whole calendar days resampled with every token's rows); the last column is the model's AUC minus the fitted 2-feature logistic's ({html.escape(", ".join(metrics.get("fitted_baseline_features", [])))}), paired on the same resampled days.</p>
{_table(["horizon", "model", "fitted logistic", "majority", "persistence", "reversal", "model - fitted", "ECE", "rows"], auc_rows)}
<h2>Reliability of the served p_up</h2>
<p>Per horizon and p_up bin: the share of rows that went up, with its day-block interval, and the rows (the models' probabilities pass through the calibration maps fitted on each fold's validation split). A calibrated model's rate sits inside its bin.</p>
{reliability_plot(curves)}
{_table(["horizon", *[f"{k / 10:.1f}-{(k + 1) / 10:.1f}" for k in range(10)]], reliability_rows)}
<h2>Net return per trade</h2>
<p>After fees and slippage, with its 95 % day-block interval (whole entry days resampled).</p>
{_table(["side", "trades", "mean net return [interval]"], expectancy_rows) if expectancy_rows else "<p>No trades.</p>"}
<h2>Policy per model set (chosen on each set's validation split)</h2>
<p>Chosen on the earlier half of each set's validation split: the decision horizon, the sides whose expected net return cleared the costs, the stop / target in units of the horizon's volatility (ATR &times; &radic;horizon bars); then traded on the later half, where the net per horizon-long period must reach a t statistic of 2. No edge: the set made no trade.</p>
{_table(["folds", "model set", "horizon", "edge", "stop / target", "later-half t"], policy_rows) if policy_rows else "<p>Served with the fixed bands (signals.policy = bands).</p>"}
<h2>The model's trades by exit reason</h2>{_table(["exit", *breakdown_cols], exit_rows)}
<h2>The model's trades by token</h2>
<p>{len(token_list)} tokens traded{token_note}.</p>
{_table(["token", *breakdown_cols], token_rows)}
<h2>Folds</h2>{_table(["fold", "test window", "return", "max drawdown", "trades", "AUC"], fold_rows)}
{histogram(returns)}
</body></html>"""
    path.write_text(page, encoding="utf-8")
