"""Causal market context: what every token did in the same minutes, as features of each token.

Per event-time minute ``t``, over the tokens with a bar at ``t``:

* each token's 1-bar log return ``r_i = log(close_t / close_prev)``, under the one gap rule
  (:func:`~memed.features.kernel.gap_rule`: a token's first bar, or its first after a restart, has none;
  a bar after a short gap carries the whole gap's move);
* the minute's equal-weight market return ``r_m(t)``: the mean of those returns, summed in ascending
  order so that it does not depend on the order tokens arrive in (the daemon's batch and the batch
  driver's rows give the same bits).

Features (``w`` minutes = ``w / interval`` bars):

* ``mkt_ret_15m``, ``mkt_ret_60m``: the sum of ``r_m`` over the minutes in ``(t - w, t]`` (a minute
  with no returns adds nothing);
* ``mkt_breadth_15m``: the share of rises among the token returns in ``(t - 15, t]`` that moved
  (``ups / (ups + downs)``; 0.5 when none moved: memecoin bars are often flat);
* ``mkt_beta_60m``: the token's beta to the market over its last 60 minutes of bars,
  ``cov(r_i, r_m) / var(r_m)`` from its last ``60 / interval`` pairs (0 when the market's variance is
  below ``(1e-9)**2``: a flat market);
* ``mkt_resid_15m``: the token's return over its last ``15 / interval`` bars minus ``beta`` times the
  market's over the same bars.

Start invariance: a minute's ``r_m`` depends on where history started only through tokens whose previous
bar lay before the start, which can be at most ``max_fill_bars + 1`` bars back. So ``r_m`` counts as
*settled* only that long after the first minute the market saw, the market features only once their whole
window is settled, and a token's beta only once its last ``60 / interval`` pairs all are. Past that, every
market feature is the same wherever history started, and the same in both drivers: the stream calls
:func:`_minute` once per minute batch; the batch and history drivers call it for every minute of a
time-sorted history (:func:`market_over_history`).

State: one global ring of the last minutes' sums (fixed size) and one fixed-size row per token.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from memed.features.kernel import STATUS_RESTART, STATUS_STALE, gap_rule
from memed.features.layout import P_INTERVAL, P_MAX_FILL
from memed.features.spec import LONG_MIN, MARKET_FEATURES, SHORT_MIN, supports_market

if TYPE_CHECKING:
    from memed.features.spec import FeatureSpec

M_OUT = len(MARKET_FEATURES)
FLAT = 1e-9
"""A market return standard deviation below this counts as a flat market (beta 0)."""

# parameters (int64): the gap rule's two (at the kernel's positions, so gap_rule reads them), the bars in
# 15 m and in 60 m, and the minutes until a minute's r_m is settled
Q_INTERVAL, Q_MAX_FILL, Q_SHORT, Q_LONG, Q_SETTLE = P_INTERVAL, P_MAX_FILL, 2, 3, 4
assert (Q_INTERVAL, Q_MAX_FILL) == (0, 1)

# global state: first minute, last minute, entries pushed, then a ring of (ts, sum, n, ups, downs)
G_FIRST, G_LAST, G_COUNT, G_RING = 0, 1, 2, 3
E_SIZE = 5
# per-token state: started, last ts, last close, valid pairs in a row, pairs pushed, then two rings
T_STARTED, T_LAST_TS, T_LAST_CLOSE, T_RUN, T_COUNT, T_RING = 0, 1, 2, 3, 4, 5


def market_params(spec: FeatureSpec) -> np.ndarray:
    """The market context's parameters for a spec (int64)."""
    interval = spec.interval_minutes
    if not supports_market(interval):
        raise ValueError(f"market context needs bars of 1, 3 or 5 minutes, not {interval}")
    max_fill = spec.gap_fill_max_minutes // interval
    settle = (max_fill + 1) * interval
    return np.array([interval, max_fill, SHORT_MIN // interval, LONG_MIN // interval, settle], dtype=np.int64)


def _ring_slots(q: np.ndarray) -> int:
    return int(2 * q[Q_LONG] + 2)  # minutes inside 60 m, with room for bars not aligned to the interval


def initial_market(q: np.ndarray) -> np.ndarray:
    g = np.zeros(G_RING + E_SIZE * _ring_slots(q))
    g[G_FIRST] = g[G_LAST] = np.nan
    return g


def initial_token(q: np.ndarray) -> np.ndarray:
    s = np.zeros(T_RING + 2 * int(q[Q_LONG]))
    s[T_LAST_TS] = s[T_LAST_CLOSE] = np.nan
    return s


@njit(cache=True)
def _returns(tok: np.ndarray, rows: np.ndarray, ts: float, close: np.ndarray, q: np.ndarray, r: np.ndarray,
             stale: np.ndarray) -> None:  # fmt: skip
    """Each bar's 1-bar log return under the gap rule (NaN: none), advancing the tokens' last bar."""
    for k in range(len(rows)):
        s = tok[rows[k]]
        status, _ = gap_rule(s[T_STARTED] > 0, s[T_LAST_TS], ts, q)
        r[k] = np.nan
        stale[k] = status == STATUS_STALE
        if stale[k]:
            continue
        if status == STATUS_RESTART:
            s[:] = 0.0
        c = close[k]
        if s[T_STARTED] > 0 and s[T_LAST_CLOSE] > 0 and c > 0 and math.isfinite(c):
            r[k] = math.log(c / s[T_LAST_CLOSE])
        s[T_STARTED] = 1.0
        s[T_LAST_TS] = ts
        s[T_LAST_CLOSE] = c


@njit(cache=True)
def _record(g: np.ndarray, ts: float, r: np.ndarray) -> None:
    """Add the minute's returns to the market's ring (summed in ascending order: arrival order does not
    matter)."""
    vals = np.sort(r[~np.isnan(r)])
    total = 0.0
    for v in vals:
        total += v
    entry = np.array([ts, total, float(len(vals)), float((vals > 0).sum()), float((vals < 0).sum())])
    slots = (len(g) - G_RING) // E_SIZE
    if np.isnan(g[G_FIRST]):
        g[G_FIRST] = ts
    if not ts <= g[G_LAST]:  # a new minute: its own entry
        at = G_RING + E_SIZE * (int(g[G_COUNT]) % slots)
        g[at : at + E_SIZE] = entry
        g[G_COUNT] += 1
        g[G_LAST] = ts
    elif ts == g[G_LAST]:  # more bars of the last minute
        at = G_RING + E_SIZE * ((int(g[G_COUNT]) - 1) % slots)
        g[at + 1 : at + E_SIZE] += entry[1:]


@njit(cache=True)
def _windows(g: np.ndarray, ts: float) -> tuple[float, float, float, float]:
    """``(ret 15 m, ret 60 m, breadth 15 m, r_m at ts)`` from the ring, oldest entry first."""
    r15 = r60 = up15 = moved15 = 0.0
    rm = np.nan
    slots = (len(g) - G_RING) // E_SIZE
    count = int(g[G_COUNT])
    for e in range(max(0, count - slots), count):
        at = G_RING + E_SIZE * (e % slots)
        ets, esum, en = g[at], g[at + 1], g[at + 2]
        if ets > ts or ets <= ts - LONG_MIN or en == 0:
            continue
        mean = esum / en
        r60 += mean
        if ets > ts - SHORT_MIN:
            r15 += mean
            up15 += g[at + 3]
            moved15 += g[at + 3] + g[at + 4]
        if ets == ts:
            rm = mean
    return r15, r60, (up15 / moved15 if moved15 > 0 else 0.5), rm


@njit(cache=True)
def _pair(s: np.ndarray, ri: float, rm: float, q: np.ndarray, o: np.ndarray) -> None:
    """Push the token's pair ``(ri, rm)`` (NaN: not valid) and write its beta and residual to ``o``."""
    w = q[Q_LONG]
    valid = not (np.isnan(ri) or np.isnan(rm))
    i = T_RING + int(s[T_COUNT]) % w
    s[i] = ri if valid else 0.0
    s[i + w] = rm if valid else 0.0
    s[T_COUNT] += 1
    s[T_RUN] = s[T_RUN] + 1 if valid else 0.0
    if s[T_RUN] < w:
        return
    xi, xm = s[T_RING : T_RING + w], s[T_RING + w : T_RING + 2 * w]
    mi, mm = xi.mean(), xm.mean()
    cov = var = 0.0
    for j in range(w):
        cov += (xi[j] - mi) * (xm[j] - mm)
        var += (xm[j] - mm) ** 2
    beta = cov / var if var > w * FLAT * FLAT else 0.0
    si = sm = 0.0
    for j in range(q[Q_SHORT]):  # the last Q_SHORT pairs, oldest first
        at = T_RING + (int(s[T_COUNT]) - q[Q_SHORT] + j) % w
        si += s[at]
        sm += s[at + w]
    o[3] = beta
    o[4] = si - beta * sm


@njit(cache=True)
def _minute(g: np.ndarray, tok: np.ndarray, rows: np.ndarray, ts: float, close: np.ndarray, q: np.ndarray,
            out: np.ndarray) -> None:  # fmt: skip
    """One minute ``ts``: the bars of tokens ``rows`` (rows of ``tok``) with their ``close``; writes each
    bar's market features to ``out`` (rows, M_OUT)."""
    n = len(rows)
    r = np.empty(n)
    stale = np.empty(n, dtype=np.bool_)
    _returns(tok, rows, ts, close, q, r, stale)
    _record(g, ts, r)
    r15, r60, breadth, rm = _windows(g, ts)
    windows = ts - g[G_FIRST] >= LONG_MIN + q[Q_SETTLE]
    if ts - g[G_FIRST] <= q[Q_SETTLE]:
        rm = np.nan  # not settled: it may lack returns of tokens whose last bar was before the start
    for k in range(n):
        o = out[k]
        o[:] = np.nan
        if stale[k]:
            continue
        if windows:
            o[0], o[1], o[2] = r15, r60, breadth
        _pair(tok[rows[k]], r[k], rm, q, o)


@njit(cache=True)
def _history(g: np.ndarray, tok: np.ndarray, order: np.ndarray, bounds: np.ndarray, token_id: np.ndarray,
             ts: np.ndarray, close: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:  # fmt: skip
    for b in range(len(bounds) - 1):
        idx = order[bounds[b] : bounds[b + 1]]
        part = np.empty((len(idx), out.shape[1]))
        _minute(g, tok, token_id[idx], ts[idx[0]], close[idx], q, part)
        for k in range(len(idx)):
            out[idx[k]] = part[k]


def market_over_history(starts: np.ndarray, ts: np.ndarray, close: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Market features of every row of a history sorted by token then time (token ``g`` is rows
    ``starts[g] .. starts[g+1]``; ``ts`` in epoch minutes): exactly what a stream fed the same rows minute
    by minute computes. Returns (rows, M_OUT)."""
    n = len(ts)
    out = np.empty((n, M_OUT))
    if n == 0:
        return out
    token_id = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    order = np.argsort(ts, kind="stable")  # time, then token order within a minute
    sorted_ts = ts[order]
    bounds = np.r_[0, np.flatnonzero(sorted_ts[1:] != sorted_ts[:-1]) + 1, n].astype(np.int64)
    tok = np.tile(initial_token(q), (len(starts) - 1, 1))
    _history(initial_market(q), tok, order, bounds, token_id, ts, close, q, out)
    return out


def market_minute(g: np.ndarray, tok: np.ndarray, rows: np.ndarray, ts: float, close: np.ndarray,
                  q: np.ndarray) -> np.ndarray:  # fmt: skip
    """The stream's step: one minute's bars (tokens at ``rows`` of ``tok``), (n, M_OUT) out."""
    out = np.empty((len(rows), M_OUT))
    _minute(g, tok, rows, ts, close, q, out)
    return out
