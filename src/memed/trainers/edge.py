"""The cost-aware policy, fitted on the validation split: is there an edge after costs, and from what
expected return does a trade pay?

For the served ensemble's calibrated decision probability ``p`` and a trade held for the decision horizon:

* the sizes of up and down moves at that horizon, measured on the validation rows: ``U = mean(r | r > 0)``,
  ``D = mean(-r | r < 0)`` with ``r`` the forward log return;
* the round-trip cost ``c = 2 x (fee_bps + slippage_bps) / 1e4`` (the backtest's own costs);
* each row's expected net return of a long: ``E_long = p U - (1 - p) D - c``; of a short:
  ``E_short = (1 - p) D - p U - c``.

The margin is chosen on validation only: among candidate margins (0 and the quantiles of ``E`` that
leave 50 % … 0.1 % of the rows), the one whose trades (``E > margin``) made the largest total realised
net return ``sum(side x r - c)``, with at least ``MIN_TRADES`` trades and a positive mean. None: there
is **no edge** after costs, and a served ``cost_aware`` policy trades nothing (HOLD, reason ``no_edge``).
Validation rows overlap in time (a trade every minute while ``E`` stays high), so the totals overstate how
many independent bets there were; they rank margins, they are not a forecast.
"""

from __future__ import annotations

import msgspec
import numpy as np

from memed.models.manifest import EdgeFit
from memed.signals.policy import expected_long

MIN_TRADES = 30
QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def _best_margin(e: np.ndarray, net: np.ndarray) -> tuple[float, int, float, float] | None:
    """``(margin, trades, mean net, total net)`` of the best margin for one side, or None."""
    candidates = sorted({0.0, *np.quantile(e, QUANTILES).tolist()})
    best: tuple[float, int, float, float] | None = None
    for m in candidates:
        if m < 0:
            continue
        take = e > m
        n = int(take.sum())
        if n < MIN_TRADES:
            continue
        total = float(net[take].sum())
        mean = total / n
        if mean > 0 and (best is None or total > best[3]):
            best = (float(m), n, mean, total)
    return best


def fit_edge(p: np.ndarray, fwd: np.ndarray, horizon: int, fee_bps: float, slippage_bps: float,
             sides: str) -> EdgeFit:  # fmt: skip
    """The policy fit on validation rows: decision probabilities ``p``, forward log returns ``fwd`` at
    the decision ``horizon`` (NaN: unknown); ``sides`` as ``signals.sides``."""
    keep = ~(np.isnan(p) | np.isnan(fwd))
    p, r = p[keep], fwd[keep]
    cost = 2.0 * (fee_bps + slippage_bps) / 1e4
    ups, downs = r[r > 0], r[r < 0]
    if len(ups) == 0 or len(downs) == 0:
        return EdgeFit(horizon=horizon, cost=cost, sides=sides, rows=len(r))
    u, d = float(ups.mean()), float(-downs.mean())
    e_long = expected_long(p, u, d, cost)
    long = _best_margin(e_long, r - cost)
    short = _best_margin(-e_long - 2 * cost, -r - cost) if sides == "both" else None
    fit = EdgeFit(horizon=horizon, cost=cost, sides=sides, rows=len(r), up_move=u, down_move=d)
    if long is not None:
        fit = _with(fit, "long", long)
    if short is not None:
        fit = _with(fit, "short", short)
    return fit


def _with(fit: EdgeFit, side: str, best: tuple[float, int, float, float]) -> EdgeFit:
    m, n, mean, total = best
    fields = {"edge": True, "margin": m, "trades": n, "net_mean": mean, "net_total": total}
    return msgspec.structs.replace(fit, **{f"{side}_{k}": v for k, v in fields.items()})
