"""Memory layout of one token's feature state and of one output row.

A token's whole state is one row of float64: scalars, then fixed-size ring buffers. Nothing grows with
history, a snapshot is the row's bytes, and a restore is a copy. Each ring of capacity R is stored twice
(slots ``[0, R)`` and ``[R, 2R)`` hold the same values) so that the last ``w`` values are always one
contiguous slice — window loops need no modulo and vectorise.

The output row lists every feature the kernel can compute (``ALL_FEATURES``); a dataset's
:class:`~memed.features.spec.FeatureSpec` selects the ones its bar interval supports.
"""

from __future__ import annotations

# ---------------------------------------------------------------- scalars
_SCALARS = (
    "n",  # bars in the current segment, filled bars included
    "last_ts",  # epoch minutes of the last bar
    "last_close",
    "last_liq",
    "last_mcap",
    "has_flow",  # 1.0 when the last bar carried buys/sells
    "rsi9_g", "rsi9_l", "rsi14_g", "rsi14_l",
    "still",  # consecutive bars whose close did not move (beyond RESIDUE)
    "ema_fast", "ema_slow", "macd_signal",
    "atr",
    "sorted_n",  # returns held in the sorted VaR window
    "dft_re1", "dft_im1", "dft_re2", "dft_im2", "dft_re3", "dft_im3", "dft_re4", "dft_im4",
    "dft_nyq",  # bin 32 is real
    "close_ref",  # reference the close-window sums are taken about (reset at each exact resync)
)  # fmt: skip

# Running window sums, O(1) per bar, recomputed exactly from the rings every RESYNC bars.
# (name, windows, powers): each window holds sums of d (and d^2) with d = x - ref.
_ACCUMULATORS = (
    ("acc_ret", 6, 2),  # returns: the five ret_* windows and the 64-bar DFT window (sum, sum of squares)
    ("acc_close", 6, 2),  # closes: the five z-score windows and Bollinger 20
    ("acc_vol", 1, 2),  # volume 30 m
    ("acc_tp", 1, 1),  # typical price 20 (CCI mean)
)
RESYNC = 64

# ---------------------------------------------------------------- rings: (name, capacity)
_RINGS = (
    ("close", 64),  # lookbacks up to 60 bars
    ("lclose", 64),  # log closes: log returns are differences, one log per bar
    ("ret", 72),  # 1-bar log returns: windows up to 64, plus the sample leaving the DFT window
    ("high", 16),
    ("low", 16),
    ("tr", 16),  # true range, ATR seed
    ("tp", 24),  # typical price, CCI (a lag of 20 must stay readable)
    ("vol", 32),
    ("buys", 16),
    ("sells", 16),
    ("liq", 16),
    ("macd", 9),  # MACD line, signal seed
    ("stoch_k", 3),  # %K, for %D
)

OFFSETS: dict[str, int] = {}
_pos = 0
for _name in _SCALARS:
    OFFSETS[_name] = _pos
    _pos += 1
for _name, _nw, _pw in _ACCUMULATORS:
    OFFSETS[_name] = _pos
    _pos += _nw * _pw
RING_CAPACITY: dict[str, int] = {}
for _name, _cap in _RINGS:
    OFFSETS["ring_" + _name] = _pos
    RING_CAPACITY[_name] = _cap
    _pos += 2 * _cap
OFFSETS["sorted"] = _pos  # ascending returns of the VaR window (at most 64)
SORTED_CAPACITY = 64
_pos += SORTED_CAPACITY
STATE_SIZE = _pos

# Offsets as plain module constants: numba freezes globals at compile time.
N = OFFSETS["n"]
LAST_TS = OFFSETS["last_ts"]
LAST_CLOSE = OFFSETS["last_close"]
LAST_LIQ = OFFSETS["last_liq"]
LAST_MCAP = OFFSETS["last_mcap"]
HAS_FLOW = OFFSETS["has_flow"]
STILL = OFFSETS["still"]
RSI_G = (OFFSETS["rsi9_g"], OFFSETS["rsi14_g"])
RSI_L = (OFFSETS["rsi9_l"], OFFSETS["rsi14_l"])
EMA_FAST = OFFSETS["ema_fast"]
EMA_SLOW = OFFSETS["ema_slow"]
MACD_SIGNAL = OFFSETS["macd_signal"]
ATR = OFFSETS["atr"]
SORTED_N = OFFSETS["sorted_n"]
DFT_RE = (OFFSETS["dft_re1"], OFFSETS["dft_re2"], OFFSETS["dft_re3"], OFFSETS["dft_re4"])
DFT_IM = (OFFSETS["dft_im1"], OFFSETS["dft_im2"], OFFSETS["dft_im3"], OFFSETS["dft_im4"])
DFT_NYQ = OFFSETS["dft_nyq"]
CLOSE_REF = OFFSETS["close_ref"]
ACC_RET = OFFSETS["acc_ret"]
ACC_CLOSE = OFFSETS["acc_close"]
ACC_VOL = OFFSETS["acc_vol"]
ACC_TP = OFFSETS["acc_tp"]
R_CLOSE, C_CLOSE = OFFSETS["ring_close"], RING_CAPACITY["close"]
R_LCLOSE, C_LCLOSE = OFFSETS["ring_lclose"], RING_CAPACITY["lclose"]
R_RET, C_RET = OFFSETS["ring_ret"], RING_CAPACITY["ret"]
R_HIGH, C_HIGH = OFFSETS["ring_high"], RING_CAPACITY["high"]
R_LOW, C_LOW = OFFSETS["ring_low"], RING_CAPACITY["low"]
R_TR, C_TR = OFFSETS["ring_tr"], RING_CAPACITY["tr"]
R_TP, C_TP = OFFSETS["ring_tp"], RING_CAPACITY["tp"]
R_VOL, C_VOL = OFFSETS["ring_vol"], RING_CAPACITY["vol"]
R_BUYS, C_BUYS = OFFSETS["ring_buys"], RING_CAPACITY["buys"]
R_SELLS, C_SELLS = OFFSETS["ring_sells"], RING_CAPACITY["sells"]
R_LIQ, C_LIQ = OFFSETS["ring_liq"], RING_CAPACITY["liq"]
R_MACD, C_MACD = OFFSETS["ring_macd"], RING_CAPACITY["macd"]
R_K, C_K = OFFSETS["ring_stoch_k"], RING_CAPACITY["stoch_k"]
SORTED = OFFSETS["sorted"]

# ---------------------------------------------------------------- parameters (int64 vector)
# Minute windows are converted to bars per dataset interval; -1 marks a window the interval cannot
# express (shorter than the bar, or too few bars for the statistic), and its feature is absent.
PARAM_NAMES = (
    "interval",
    "max_fill_bars",
    "lr1", "lr5", "lr15", "lr30", "lr60",
    "rs5", "rs10", "rs15", "rs30", "rs60",
    "z5", "z10", "z15", "z30", "z60",
    "vol30", "flow15", "liq15",
    "mom10", "acc5",
    "var60", "dft64",
)  # fmt: skip
P = {name: i for i, name in enumerate(PARAM_NAMES)}
P_INTERVAL = P["interval"]
P_MAX_FILL = P["max_fill_bars"]
P_LR = (P["lr1"], P["lr5"], P["lr15"], P["lr30"], P["lr60"])
P_RS = (P["rs5"], P["rs10"], P["rs15"], P["rs30"], P["rs60"])
P_Z = (P["z5"], P["z10"], P["z15"], P["z30"], P["z60"])
P_VOL = P["vol30"]
P_FLOW = P["flow15"]
P_LIQ = P["liq15"]
P_MOM = P["mom10"]
P_ACC = P["acc5"]
P_VAR = P["var60"]
P_DFT = P["dft64"]
