"""The one implementation of every feature: a compiled per-token step.

:func:`advance` applies the gap rule and then :func:`_step` updates one token's state row with one bar
and writes that bar's feature row. The batch driver calls it in a compiled loop over whole histories; the
streaming driver calls it for each token of a minute's batch. Both call *this* function, so streaming and
batch results are equal by construction (and a test proves it on real data).

Conventions (pinned by tests; TA-Lib is the oracle for the classic indicators):

* Wilder RSI and ATR are seeded with the simple mean of their first ``n`` gains/losses or true ranges,
  exactly as TA-Lib. MACD's EMAs follow TA-Lib too: the slow EMA is seeded with the SMA of the first 26
  closes and the fast EMA with the SMA of closes 15..26, so both start at bar 26; the signal line is seeded
  with the SMA of the first 9 MACD values.
* Bollinger bands and all z-scores use the population standard deviation (ddof = 0). Window sums are
  running sums (O(1) per bar) of values taken about a reference (the close at the last resync, 0 for
  returns and volume), recomputed exactly from the ring buffers every ``RESYNC`` bars of a segment, so
  rounding cannot accumulate; the schedule depends only on the bar count, so every driver, and a restored
  snapshot, resyncs at the same bars. A window whose variance is below 1e-12 of its mean square is flat.
* Flat stretches (a window with high == low, or zero variance), where TA-Lib writes 0: memed writes the
  neutral value instead — RSI 50, stochastic %K 50 (and %D averages those), Williams %R -50,
  Bollinger %b 0.5, z-scores, skewness, kurtosis, volume z-score and DFT shares 0. CCI writes 0 like TA-Lib.
  After ``p`` bars without a move (a dead stretch) RSI's averages are emptied (RSI 50) where TA-Lib keeps
  their decayed values: a decayed average's ratio keeps its seed's share forever, i.e. depends on where
  history started.
* Start invariance: past its warm-up a feature must not depend on where the token's history began (a
  daemon starts at deployment, a backtest at the data's start; ``memed check start`` measures it). So no
  dataset clock (no age since the first bar seen), no cumulative level (OBV became the rolling net-volume
  share), and no price levels (MACD, Bollinger bands and ATR are per close), which also lets one model
  serve tokens whose prices differ by nine orders of magnitude. Where a z-score's or CCI's numerator, or
  CCI's mean deviation, a window's standard deviation or a band's distance to the close is rounding
  residue of the running sums (below ``RESIDUE`` = 1e-9 of the price, or 1e-9 in log-return units, far
  below any tick) it is taken as exactly 0, so the value cannot depend on the resync schedule, i.e. on
  where history started.
* A long gap resets the state (a new segment, a new warm-up).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar, cast

import numpy as np
from numba import njit
from numba.core.options import DefaultOptions

from memed.features.layout import (
    ACC_CLOSE,
    ACC_RET,
    ACC_TP,
    ACC_VOL,
    ATR,
    C_BUYS,
    C_CLOSE,
    C_HIGH,
    C_K,
    C_LCLOSE,
    C_LIQ,
    C_LOW,
    C_MACD,
    C_RET,
    C_SELLS,
    C_TP,
    C_TR,
    C_VOL,
    CLOSE_REF,
    DFT_IM,
    DFT_NYQ,
    DFT_RE,
    EMA_FAST,
    EMA_SLOW,
    HAS_FLOW,
    LAST_CLOSE,
    LAST_LIQ,
    LAST_MCAP,
    LAST_TS,
    MACD_SIGNAL,
    P_ACC,
    P_DFT,
    P_FLOW,
    P_INTERVAL,
    P_LIQ,
    P_LR,
    P_MAX_FILL,
    P_MOM,
    P_RS,
    P_VAR,
    P_VOL,
    P_Z,
    R_BUYS,
    R_CLOSE,
    R_HIGH,
    R_K,
    R_LCLOSE,
    R_LIQ,
    R_LOW,
    R_MACD,
    R_RET,
    R_SELLS,
    R_TP,
    R_TR,
    R_VOL,
    RESYNC,
    RSI_G,
    RSI_L,
    SORTED,
    SORTED_N,
    STATE_SIZE,
    STILL,
    N,
)
from memed.features.spec import ALL_FEATURES

N_OUT = len(ALL_FEATURES)
_O = {name: i for i, name in enumerate(ALL_FEATURES)}
O_LOGRET = _O["logret_1m"]  # five consecutive columns: 1, 5, 15, 30, 60 m
O_RET_MEAN = _O["ret_mean_5m"]  # five: 5, 10, 15, 30, 60 m
O_RET_STD = _O["ret_std_5m"]
O_ZSCORE = _O["zscore_5m"]
O_RSI = _O["rsi_9"]  # two: 9, 14
O_MACD = _O["macd_pct"]  # macd, signal, histogram, per close
O_BB = _O["bb_upper_dist_20"]  # upper and lower band per close minus 1, width, %b
O_ATR = _O["atr_pct_14"]
O_STOCH = _O["stoch_k_14"]  # %K, %D
O_WILLR = _O["willr_14"]
O_CCI = _O["cci_20"]
O_NETVOL = _O["net_volume_30m"]
O_VOL = _O["volume_ratio_30m"]  # ratio, z-score
O_FLOW = _O["buy_pressure"]  # bar, 15 m, liquidity change
O_MOMENTS = _O["ret_skew_30m"]  # skew30, kurt30, skew60, kurt60
O_VAR = _O["var_95_60m"]
O_DFT = _O["fft_low_share_64m"]  # low share, nyquist share
O_MOM = _O["momentum_10m"]  # momentum, acceleration

RESIDUE = 1e-9
"""A difference of prices at most this share of the price is rounding residue of the running sums (far
below any tick), taken as exactly 0: a z-score's or CCI's numerator, CCI's mean deviation."""
RSI_PERIODS = (9, 14)
DFT_BINS = 64
DFT_RESYNC = 64  # bars between exact recomputations of the sliding DFT
_TWO_PI = 2.0 * math.pi
DFT_COS = np.array([[math.cos(_TWO_PI * k * j / DFT_BINS) for j in range(DFT_BINS)] for k in range(1, 5)])
DFT_SIN = np.array([[math.sin(_TWO_PI * k * j / DFT_BINS) for j in range(DFT_BINS)] for k in range(1, 5)])
ROT_COS = np.array([math.cos(_TWO_PI * k / DFT_BINS) for k in range(1, 5)])
ROT_SIN = np.array([math.sin(_TWO_PI * k / DFT_BINS) for k in range(1, 5)])

STATUS_OK = 0
STATUS_STALE = 1  # duplicate or out-of-order bar: ignored, state unchanged
STATUS_RESTART = 2  # long gap: the token's state restarted


def _per_bar_options() -> dict[str, bool]:
    """numba options of the per-bar step (:func:`advance` and :func:`_step`), which every driver calls once
    per bar: inlined into the driver's loop by LLVM (``forceinline``), and compiled without the runtime's
    reference counting (``_nrt=False``: neither allocates, and the caller holds every array for the call's
    length) — as separate functions each call took and dropped a reference to each of its arrays, atomic
    operations that together cost ~20 % of the kernel's time. The arithmetic compiles to the same
    instructions (no fast-math, no contraction), so every value is the same bit for bit. An option this
    numba does not know is left out: slower, never different."""
    wanted = {"forceinline": True, "_nrt": False}
    return {name: value for name, value in wanted.items() if hasattr(DefaultOptions, name)}


PER_BAR = _per_bar_options()
_F = TypeVar("_F", bound=Callable[..., object])


def _per_bar(fn: _F) -> _F:
    """``@njit(cache=True)`` with :data:`PER_BAR`'s options."""
    return cast(_F, njit(cache=True, **PER_BAR)(fn))  # type: ignore[call-overload]


def initial_state() -> np.ndarray:
    """A fresh token state row."""
    s = np.zeros(STATE_SIZE)
    s[LAST_TS] = np.nan
    return s


# ---------------------------------------------------------------- ring helpers


@njit(cache=True, inline="always")
def _push(s: np.ndarray, off: int, cap: int, count: int, x: float) -> None:
    """Store the ``count``-th value (1-based) of a doubled ring; lags 0 .. cap-1 stay readable."""
    p = (count - 1) % cap
    s[off + p] = x
    s[off + p + cap] = x


@njit(cache=True, inline="always")
def _start(off: int, cap: int, count: int, w: int) -> int:
    """Index of the first of the last ``w`` values (a contiguous slice of length ``w``)."""
    return off + (count - 1) % cap + cap - w + 1


@njit(cache=True, inline="always")
def _lag(s: np.ndarray, off: int, cap: int, count: int, k: int) -> float:
    """The value ``k`` pushes before the newest one."""
    v: float = s[off + (count - 1) % cap + cap - k]
    return v


FLAT = 1e-12  # relative variance below which a window counts as flat (rounding noise, not signal)


@njit(cache=True, inline="always")
def _acc_add(s: np.ndarray, a: int, pw: int, w: int, ring: int, cap: int, count: int, x: float,
             ref: float) -> None:  # fmt: skip
    """Add the newest value (already pushed as the ``count``-th) to a window's sums; drop the leaving one."""
    if w <= 0:
        return
    d = x - ref
    d2 = d * d
    s[a] += d
    if pw == 2:
        s[a + 1] += d2
    if count > w:
        y = _lag(s, ring, cap, count, w) - ref
        s[a] -= y
        if pw == 2:
            s[a + 1] -= y * y


@njit(cache=True)
def _acc_resync(s: np.ndarray, a: int, pw: int, w: int, ring: int, cap: int, count: int, ref: float) -> None:
    """Recompute a window's sums exactly from the ring."""
    if w <= 0:
        return
    k = min(count, w)
    st = _start(ring, cap, count, k)
    s1 = 0.0
    s2 = 0.0
    for i in range(st, st + k):
        d = s[i] - ref
        s1 += d
        s2 += d * d
    s[a] = s1
    if pw == 2:
        s[a + 1] = s2


@njit(cache=True, inline="always")
def _mean_var(s: np.ndarray, a: int, w: int, residue: float) -> tuple[float, float]:
    """Mean (about the reference) and population variance of a window from its sums; flat -> 0 (a
    variance below ``FLAT`` of the mean square, or a deviation below ``residue``, is rounding noise)."""
    m = s[a] / w
    e2 = s[a + 1] / w
    var = e2 - m * m
    if var <= FLAT * e2 or var <= residue * residue:
        var = 0.0
    return m, var


@njit(cache=True, inline="always")
def _ret_window(p: np.ndarray, j: int) -> int:
    w: int = p[P_RS[j]] if j < 5 else (DFT_BINS if p[P_DFT] > 0 else -1)
    return w


@njit(cache=True, inline="always")
def _close_window(p: np.ndarray, j: int) -> int:
    w: int = p[P_Z[j]] if j < 5 else 20
    return w


@njit(cache=True, inline="always")
def _ring_sum(s: np.ndarray, off: int, cap: int, count: int, k: int) -> float:
    """Sum, oldest first, of the last ``k`` values of a ring (the seeds of EMAs and Wilder averages)."""
    a = _start(off, cap, count, k)
    t = 0.0
    for j in range(a, a + k):
        t += s[j]
    return t


@njit(cache=True)
def _sorted_insert(s: np.ndarray, n: int, x: float) -> None:
    """Insert x into the ascending array s[SORTED:SORTED+n]."""
    i = n
    while i > 0 and s[SORTED + i - 1] > x:
        s[SORTED + i] = s[SORTED + i - 1]
        i -= 1
    s[SORTED + i] = x


@njit(cache=True)
def _sorted_remove(s: np.ndarray, n: int, x: float) -> None:
    """Remove one occurrence of x from the ascending array s[SORTED:SORTED+n]."""
    lo = 0
    hi = n
    while lo < hi:  # first index with value >= x
        mid = (lo + hi) // 2
        if s[SORTED + mid] < x:
            lo = mid + 1
        else:
            hi = mid
    for i in range(lo, n - 1):
        s[SORTED + i] = s[SORTED + i + 1]


@njit(cache=True)
def _dft_resync(s: np.ndarray, count: int) -> None:
    """Recompute DFT bins 1..4 and 32 of the last 64 returns exactly (oldest sample is j = 0)."""
    a = _start(R_RET, C_RET, count, DFT_BINS)
    for k in range(4):
        re = 0.0
        im = 0.0
        for j in range(DFT_BINS):
            x = s[a + j]
            re += x * DFT_COS[k, j]
            im -= x * DFT_SIN[k, j]
        s[DFT_RE[k]] = re
        s[DFT_IM[k]] = im
    nyq = 0.0
    for j in range(DFT_BINS):
        nyq += s[a + j] if j % 2 == 0 else -s[a + j]
    s[DFT_NYQ] = nyq


@njit(cache=True)
def _dft_slide(s: np.ndarray, x_old: float, x_new: float) -> None:
    """Slide the window by one sample: X_k <- e^{2 pi i k / 64} (X_k - x_old + x_new)."""
    delta = x_new - x_old
    for k in range(4):
        re = s[DFT_RE[k]] + delta
        im = s[DFT_IM[k]]
        s[DFT_RE[k]] = re * ROT_COS[k] - im * ROT_SIN[k]
        s[DFT_IM[k]] = re * ROT_SIN[k] + im * ROT_COS[k]
    s[DFT_NYQ] = -(s[DFT_NYQ] + delta)


# ---------------------------------------------------------------- the step


@njit(cache=True)
def _moments(s: np.ndarray, out: np.ndarray, o: int, nr: int, w: int) -> None:
    """Skewness and excess kurtosis of the last ``w`` returns, from centred sums taken exactly over the
    ring (third and fourth power sums run as running sums lose every digit once a large return has left
    the window, so the value would depend on the resync schedule, i.e. on where history started)."""
    st = _start(R_RET, C_RET, nr, w)
    t = 0.0
    for q in range(st, st + w):
        t += s[q]
    m = t / w
    c2 = 0.0
    c3 = 0.0
    c4 = 0.0
    for q in range(st, st + w):
        d = s[q] - m
        d2 = d * d
        c2 += d2
        c3 += d2 * d
        c4 += d2 * d2
    m2 = c2 / w
    if m2 <= RESIDUE * RESIDUE or m2 <= FLAT * (m2 + m * m):
        out[o] = 0.0
        out[o + 1] = 0.0
    else:
        out[o] = c3 / w / (m2 * math.sqrt(m2))
        out[o + 1] = c4 / w / (m2 * m2) - 3.0


@_per_bar
def _step(s: np.ndarray, out: np.ndarray, p: np.ndarray, ts: float, o: float, h: float, lo: float,
          c: float, v: float, liq: float, buys: float, sells: float, mcap: float) -> None:  # fmt: skip
    """Advance one token by one contiguous bar and write its features into ``out`` (NaN = not ready)."""
    out[:] = np.nan
    n = int(s[N]) + 1
    s[N] = n
    prev_c = s[LAST_CLOSE]
    s[LAST_TS] = ts
    s[LAST_CLOSE] = c
    s[LAST_LIQ] = liq
    s[LAST_MCAP] = mcap
    s[HAS_FLOW] = 0.0 if math.isnan(buys) else 1.0

    lc = math.log(c)
    _push(s, R_CLOSE, C_CLOSE, n, c)
    _push(s, R_LCLOSE, C_LCLOSE, n, lc)
    _push(s, R_HIGH, C_HIGH, n, h)
    _push(s, R_LOW, C_LOW, n, lo)
    tp = (h + lo + c) / 3.0
    _push(s, R_TP, C_TP, n, tp)
    _push(s, R_VOL, C_VOL, n, v)
    _push(s, R_BUYS, C_BUYS, n, buys)
    _push(s, R_SELLS, C_SELLS, n, sells)
    _push(s, R_LIQ, C_LIQ, n, liq)
    nr = n - 1  # returns seen in this segment
    r = 0.0
    if n >= 2:
        r = lc - _lag(s, R_LCLOSE, C_LCLOSE, n, 1)
        _push(s, R_RET, C_RET, nr, r)
        _push(s, R_TR, C_TR, nr, max(h, prev_c) - min(lo, prev_c))
        if nr % RESYNC == 0:
            for j in range(6):
                _acc_resync(s, ACC_RET + 2 * j, 2, _ret_window(p, j), R_RET, C_RET, nr, 0.0)
        else:
            for j in range(6):
                _acc_add(s, ACC_RET + 2 * j, 2, _ret_window(p, j), R_RET, C_RET, nr, r, 0.0)
    if n == 1:
        s[CLOSE_REF] = c
    if n % RESYNC == 0:
        s[CLOSE_REF] = c
        for j in range(6):
            _acc_resync(s, ACC_CLOSE + 2 * j, 2, _close_window(p, j), R_CLOSE, C_CLOSE, n, c)
        _acc_resync(s, ACC_VOL, 2, p[P_VOL], R_VOL, C_VOL, n, 0.0)
        _acc_resync(s, ACC_TP, 1, 20, R_TP, C_TP, n, 0.0)
    else:
        ref = s[CLOSE_REF]
        for j in range(6):
            _acc_add(s, ACC_CLOSE + 2 * j, 2, _close_window(p, j), R_CLOSE, C_CLOSE, n, c, ref)
        _acc_add(s, ACC_VOL, 2, p[P_VOL], R_VOL, C_VOL, n, v, 0.0)
        _acc_add(s, ACC_TP, 1, 20, R_TP, C_TP, n, tp, 0.0)
    ref = s[CLOSE_REF]

    # --- log returns over k bars
    for i in range(5):
        k = p[P_LR[i]]
        if k > 0 and n > k:
            out[O_LOGRET + i] = lc - _lag(s, R_LCLOSE, C_LCLOSE, n, k)

    # --- rolling moments of returns (mean, std; skew and kurtosis over 30 and 60 minutes)
    for i in range(5):
        w = p[P_RS[i]]
        if w > 0 and nr >= w:
            a = ACC_RET + 2 * i
            m = s[a] / w
            e2 = s[a + 1] / w
            m2 = e2 - m * m
            if m2 <= FLAT * e2 or m2 <= RESIDUE * RESIDUE:  # log returns: RESIDUE is 1e-7 %
                m2 = 0.0
            out[O_RET_MEAN + i] = m
            out[O_RET_STD + i] = math.sqrt(m2)
            if i >= 3 and w >= 4:
                _moments(s, out, O_MOMENTS + 2 * (i - 3), nr, w)

    # --- price z-scores
    for i in range(5):
        w = p[P_Z[i]]
        if w > 0 and n >= w:
            m, var = _mean_var(s, ACC_CLOSE + 2 * i, w, RESIDUE * abs(c))
            dev = (c - ref) - m
            out[O_ZSCORE + i] = dev / math.sqrt(var) if (var > 0.0 and abs(dev) > RESIDUE * abs(c)) else 0.0

    # --- Wilder RSI, seeded with the simple mean of the first p gains and losses; after p bars without a
    # move its averages hold nothing of the past (exactly 0: RSI 50), so a dead stretch forgets the seed
    if n >= 2:
        gain = max(c - prev_c, 0.0)
        loss = max(prev_c - c, 0.0)
        s[STILL] = s[STILL] + 1.0 if abs(c - prev_c) <= RESIDUE * abs(c) else 0.0
        for i in range(2):
            per = RSI_PERIODS[i]
            if n == per + 1:
                g = 0.0
                lsum = 0.0
                a = _start(R_CLOSE, C_CLOSE, n, per + 1)
                for j in range(a + 1, a + per + 1):
                    d = s[j] - s[j - 1]
                    if d > 0:
                        g += d
                    else:
                        lsum -= d
                s[RSI_G[i]] = g / per
                s[RSI_L[i]] = lsum / per
            elif n > per + 1:
                s[RSI_G[i]] = (s[RSI_G[i]] * (per - 1) + gain) / per
                s[RSI_L[i]] = (s[RSI_L[i]] * (per - 1) + loss) / per
            if s[STILL] >= per:
                s[RSI_G[i]] = 0.0
                s[RSI_L[i]] = 0.0
            if n >= per + 1:
                tot = s[RSI_G[i]] + s[RSI_L[i]]
                out[O_RSI + i] = 100.0 * s[RSI_G[i]] / tot if tot > 0.0 else 50.0

    # --- MACD 12/26/9, seeded as TA-Lib does
    if n == 26:
        s[EMA_SLOW] = _ring_sum(s, R_CLOSE, C_CLOSE, n, 26) / 26.0
        s[EMA_FAST] = _ring_sum(s, R_CLOSE, C_CLOSE, n, 12) / 12.0
    elif n > 26:
        s[EMA_FAST] = (c - s[EMA_FAST]) * (2.0 / 13.0) + s[EMA_FAST]
        s[EMA_SLOW] = (c - s[EMA_SLOW]) * (2.0 / 27.0) + s[EMA_SLOW]
    if n >= 26:
        macd = s[EMA_FAST] - s[EMA_SLOW]
        nm = n - 25
        _push(s, R_MACD, C_MACD, nm, macd)
        out[O_MACD] = macd / c
        if nm == 9:
            s[MACD_SIGNAL] = _ring_sum(s, R_MACD, C_MACD, nm, 9) / 9.0
        elif nm > 9:
            s[MACD_SIGNAL] = (macd - s[MACD_SIGNAL]) * 0.2 + s[MACD_SIGNAL]
        if nm >= 9:
            out[O_MACD + 1] = s[MACD_SIGNAL] / c
            out[O_MACD + 2] = (macd - s[MACD_SIGNAL]) / c

    # --- Bollinger bands 20 / 2 (population std)
    if n >= 20:
        m, var = _mean_var(s, ACC_CLOSE + 2 * 5, 20, RESIDUE * abs(c))
        m += ref
        sd = math.sqrt(var)
        up = m + 2.0 * sd
        dn = m - 2.0 * sd
        out[O_BB] = (up - c) / c if abs(up - c) > RESIDUE * abs(c) else 0.0
        out[O_BB + 1] = (dn - c) / c if abs(dn - c) > RESIDUE * abs(c) else 0.0
        out[O_BB + 2] = (up - dn) / m
        out[O_BB + 3] = (c - dn) / (up - dn) if up > dn else 0.5

    # --- ATR 14 (Wilder), seeded with the mean of the first 14 true ranges
    if nr == 14:
        s[ATR] = _ring_sum(s, R_TR, C_TR, nr, 14) / 14.0
    elif nr > 14:
        s[ATR] = (s[ATR] * 13.0 + _lag(s, R_TR, C_TR, nr, 0)) / 14.0
    if nr >= 14:
        out[O_ATR] = s[ATR] / c

    # --- stochastic %K / %D and Williams %R over 14 bars
    if n >= 14:
        ah = _start(R_HIGH, C_HIGH, n, 14)
        al = _start(R_LOW, C_LOW, n, 14)
        hh = s[ah]
        ll = s[al]
        for j in range(1, 14):
            hh = max(hh, s[ah + j])
            ll = min(ll, s[al + j])
        rng = hh - ll
        k = 100.0 * (c - ll) / rng if rng > 0.0 else 50.0
        out[O_WILLR] = -100.0 * (hh - c) / rng if rng > 0.0 else -50.0
        nk = n - 13
        _push(s, R_K, C_K, nk, k)
        out[O_STOCH] = k
        if nk >= 3:
            a = _start(R_K, C_K, nk, 3)
            out[O_STOCH + 1] = (s[a] + s[a + 1] + s[a + 2]) / 3.0

    # --- CCI 20
    if n >= 20:
        a = _start(R_TP, C_TP, n, 20)
        m = s[ACC_TP] / 20.0
        md0 = 0.0
        md1 = 0.0
        for j in range(a, a + 20, 2):  # two partial sums halve the dependency chain
            md0 += abs(s[j] - m)
            md1 += abs(s[j + 1] - m)
        md = (md0 + md1) / 20.0
        dev = tp - m
        tiny = RESIDUE * abs(m)
        out[O_CCI] = dev / (0.015 * md) if (md > tiny and abs(dev) > tiny) else 0.0

    # --- net volume: the share of the window's volume traded on up-bars minus down-bars
    w = p[P_VOL]
    if w > 0 and n > w:
        signed = 0.0
        total = 0.0
        for j in range(w):
            vj = _lag(s, R_VOL, C_VOL, n, j)
            dc = _lag(s, R_CLOSE, C_CLOSE, n, j) - _lag(s, R_CLOSE, C_CLOSE, n, j + 1)
            total += vj
            if dc > 0.0:
                signed += vj
            elif dc < 0.0:
                signed -= vj
        out[O_NETVOL] = signed / total if total > 0.0 else 0.0

    # --- volume ratio and z-score
    w = p[P_VOL]
    if w > 0 and n >= w:
        m, var = _mean_var(s, ACC_VOL, w, 0.0)
        out[O_VOL] = v / m if m > 0.0 else 0.0
        out[O_VOL + 1] = (v - m) / math.sqrt(var) if var > 0.0 else 0.0

    # --- order flow and liquidity (NaN where the source lacks the columns)
    if not (math.isnan(buys) or math.isnan(sells)):
        out[O_FLOW] = buys / (buys + sells) if buys + sells > 0.0 else 0.5
    w = p[P_FLOW]
    if w > 0 and n >= w:
        ab = _start(R_BUYS, C_BUYS, n, w)
        asl = _start(R_SELLS, C_SELLS, n, w)
        tb = 0.0
        ts_ = 0.0
        for j in range(w):
            tb += s[ab + j]
            ts_ += s[asl + j]
        if not math.isnan(tb + ts_):
            out[O_FLOW + 1] = tb / (tb + ts_) if tb + ts_ > 0.0 else 0.5
    w = p[P_LIQ]
    if w > 0 and n > w:
        old = _lag(s, R_LIQ, C_LIQ, n, w)
        if liq > 0.0 and old > 0.0:
            out[O_FLOW + 2] = math.log(liq / old)

    # --- historical VaR 95 % of 1-bar returns (linear interpolation, as numpy's default quantile)
    w = p[P_VAR]
    if w > 0 and n >= 2:
        sn = int(s[SORTED_N])
        if sn == w:
            _sorted_remove(s, sn, _lag(s, R_RET, C_RET, nr, w))
            sn -= 1
        _sorted_insert(s, sn, r)
        sn += 1
        s[SORTED_N] = sn
        if sn == w:
            hpos = (w - 1) * 0.05
            i0 = int(hpos)
            frac = hpos - i0
            q = s[SORTED + i0] + frac * (s[SORTED + i0 + 1] - s[SORTED + i0]) if frac > 0 else s[SORTED + i0]
            out[O_VAR] = -q

    # --- sliding DFT of the last 64 returns: share of energy at periods >= 16 bars, and at 2 bars
    if p[P_DFT] > 0 and n >= 2:
        if nr > DFT_BINS and (nr - DFT_BINS) % DFT_RESYNC == 0:
            _dft_resync(s, nr)
        else:
            x_old = _lag(s, R_RET, C_RET, nr, DFT_BINS) if nr > DFT_BINS else 0.0
            _dft_slide(s, x_old, r)
        if nr >= DFT_BINS:
            m, var = _mean_var(s, ACC_RET + 2 * 5, DFT_BINS, RESIDUE)
            ac = var * DFT_BINS * DFT_BINS  # sum over k = 1..63 of |X_k|^2 (Parseval)
            if ac > 0.0:
                low = 0.0
                for k in range(4):
                    low += s[DFT_RE[k]] ** 2 + s[DFT_IM[k]] ** 2
                out[O_DFT] = 2.0 * low / ac
                out[O_DFT + 1] = s[DFT_NYQ] ** 2 / ac
            else:
                out[O_DFT] = 0.0
                out[O_DFT + 1] = 0.0

    # --- momentum and acceleration
    k = p[P_MOM]
    if k > 0 and n > k:
        out[O_MOM] = c / _lag(s, R_CLOSE, C_CLOSE, n, k) - 1.0
    k = p[P_ACC]
    if k > 0 and n > 2 * k:
        out[O_MOM + 1] = lc - 2.0 * _lag(s, R_LCLOSE, C_LCLOSE, n, k) + _lag(s, R_LCLOSE, C_LCLOSE, n, 2 * k)


@njit(cache=True)
def _reset(s: np.ndarray) -> None:
    """Start a new segment: everything is forgotten."""
    s[:] = 0.0
    s[LAST_TS] = np.nan


@njit(cache=True, inline="always")
def gap_rule(started: bool, last_ts: float, ts: float, p: np.ndarray) -> tuple[int, int]:
    """The one gap rule, for a token's bar at ``ts`` after its last at ``last_ts`` (epoch minutes):
    ``(STATUS_*, bars to fill)``. A bar not later than the last is stale; more than ``max_fill_bars``
    missing bars restart the token's segment; fewer are filled with flat bars."""
    if not started:
        return STATUS_OK, 0
    gap = ts - last_ts
    if gap <= 0:
        return STATUS_STALE, 0
    missing = int(gap // p[P_INTERVAL]) - 1
    if missing > p[P_MAX_FILL]:
        return STATUS_RESTART, 0
    return STATUS_OK, max(missing, 0)


@_per_bar
def advance(s: np.ndarray, out: np.ndarray, p: np.ndarray, ts: float, o: float, h: float, lo: float,
            c: float, v: float, liq: float, buys: float, sells: float, mcap: float) -> int:  # fmt: skip
    """Apply the gap rule, then step the bar. ``ts`` is in epoch minutes. Returns a STATUS_* code."""
    status, missing = gap_rule(s[N] > 0, s[LAST_TS], ts, p)
    if status == STATUS_STALE:
        return status
    if status == STATUS_RESTART:
        _reset(s)
    elif missing > 0:
        pc = s[LAST_CLOSE]
        flow = 0.0 if s[HAS_FLOW] > 0 else np.nan
        t0 = s[LAST_TS]
        for j in range(1, missing + 1):
            t = t0 + j * p[P_INTERVAL]
            _step(s, out, p, t, pc, pc, pc, pc, 0.0, s[LAST_LIQ], flow, flow, s[LAST_MCAP])
    _step(s, out, p, ts, o, h, lo, c, v, liq, buys, sells, mcap)
    return status
