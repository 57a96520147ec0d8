"""The feature specification: names, parameters, warm-ups, order, and a stable hash.

Window conventions (written down once, here):

* Features named ``..._<w>m`` are defined over *minutes*. A dataset with a bar interval of ``i`` minutes
  computes them over ``w / i`` bars; when ``w`` is not a multiple of ``i`` or gives too few bars for the
  statistic, the feature is **absent** from that dataset's spec (not garbage).
* Classic indicators (``rsi_14``, ``atr_pct_14``, ``macd_pct``, ``bb_*_20``, ``stoch_*_14``, ``willr_14``,
  ``cci_20``) count *bars*, as traders use them on every timeframe.
* A value before its feature's warm-up (counted in bars since the token's segment start) is null.
* Start invariance: past its warm-up no feature depends on where the token's history started. Window
  features agree exactly once their window is full. The averages seeded at a segment's first bars (Wilder
  RSI and ATR, MACD's EMAs, as TA-Lib seeds them) forget their seed geometrically; their warm-up is their
  *convergence horizon*: the seed bars plus the bars until the seed's weight ``(1 - alpha) ** k`` is below
  ``SEED_WEIGHT`` (1e-6; 1e-9 for MACD, see ``MACD_SEED_WEIGHT``), so the value agrees to about 1e-6
  wherever history started. The longest horizon (MACD's signal line: 304 bars) sets the token's warm-up;
  ``memed check start`` measures it.

The hash covers the spec version, the bar interval, the gap rule, every feature's name, parameters and
warm-up, and the source text of the kernel: any change to the math changes the hash, and models trained
on another hash are refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from memed.errors import ConfigError
from memed.features import layout

ATR_FEATURE = "atr_pct_14"
"""The ATR the risk plans and the policy's stops are sized with (as a fraction of the close)."""

SPEC_VERSION = 2

SEED_WEIGHT = 1e-6
"""Weight left on a seeded average's seed when it counts as converged (see the module docstring)."""


MACD_SEED_WEIGHT = SEED_WEIGHT * 1e-3
"""MACD is the small difference of two EMAs of the price (typically 1e-3 of it) while their seeds err by
price moves (up to the price itself on a pump): its seed must fade a thousand times further to agree to
1e-6 at MACD's scale."""


def converged_after(seed_bars: int, alpha: float, weight: float = SEED_WEIGHT) -> int:
    """Bars of a segment after which an average seeded over ``seed_bars`` and then smoothed with factor
    ``alpha`` carries less than ``weight`` of its seed."""
    return seed_bars + math.ceil(math.log(weight) / math.log1p(-alpha))


@dataclass(frozen=True, slots=True)
class FeatureDef:
    name: str
    index: int  # column in the kernel's output row
    params: dict[str, int]
    warmup: int  # bars of a segment needed before the value exists
    optional: bool = False  # depends on columns a source may lack (buys/sells, liquidity)


def _catalogue() -> list[tuple[str, dict[str, object]]]:
    """Every feature the kernel computes, in output order, with its definition parameters."""
    rows: list[tuple[str, dict[str, object]]] = []
    for w in (1, 5, 15, 30, 60):
        rows.append((f"logret_{w}m", {"window_min": w, "min_bars": 1, "warm": "w+1"}))
    for w in (5, 10, 15, 30, 60):
        rows.append((f"ret_mean_{w}m", {"window_min": w, "min_bars": 2, "warm": "w+1", "pkey": f"rs{w}"}))
    for w in (5, 10, 15, 30, 60):
        rows.append((f"ret_std_{w}m", {"window_min": w, "min_bars": 2, "warm": "w+1", "pkey": f"rs{w}"}))
    for w in (5, 10, 15, 30, 60):
        rows.append((f"zscore_{w}m", {"window_min": w, "min_bars": 2, "warm": "w", "pkey": f"z{w}"}))
    for p in (9, 14):
        rows.append((f"rsi_{p}", {"period": p, "seeded": p + 1, "warmup": converged_after(p + 1, 1 / p)}))
    macd = {"fast": 12, "slow": 26, "signal": 9}
    rows.append(("macd_pct", {**macd, "seeded": 26, "warmup": converged_after(26, 2 / 27, MACD_SEED_WEIGHT)}))
    # the signal line smooths MACD (seeded 8 bars later) and inherits the slow EMA's seed error
    signal: dict[str, object] = {
        **macd,
        "seeded": 34,
        "warmup": converged_after(34, 2 / 27, MACD_SEED_WEIGHT),
    }
    rows.append(("macd_signal_pct", signal))
    rows.append(("macd_hist_pct", signal))
    for name in ("bb_upper_dist_20", "bb_lower_dist_20", "bb_width_20", "bb_pctb_20"):
        rows.append((name, {"period": 20, "nbdev": 2, "warmup": 20}))
    rows.append(("atr_pct_14", {"period": 14, "seeded": 15, "warmup": converged_after(15, 1 / 14)}))
    rows.append(("stoch_k_14", {"period": 14, "warmup": 14}))
    rows.append(("stoch_d_14", {"period": 14, "smooth": 3, "warmup": 16}))
    rows.append(("willr_14", {"period": 14, "warmup": 14}))
    rows.append(("cci_20", {"period": 20, "warmup": 20}))
    rows.append(("net_volume_30m", {"window_min": 30, "min_bars": 2, "warm": "w+1", "pkey": "vol30"}))
    rows.append(("volume_ratio_30m", {"window_min": 30, "min_bars": 2, "warm": "w", "pkey": "vol30"}))
    rows.append(("volume_zscore_30m", {"window_min": 30, "min_bars": 2, "warm": "w", "pkey": "vol30"}))
    rows.append(("buy_pressure", {"warmup": 1, "optional": 1}))
    rows.append(
        ("buy_pressure_15m", {"window_min": 15, "min_bars": 1, "warm": "w", "pkey": "flow15", "optional": 1})
    )
    rows.append(
        (
            "liquidity_change_15m",
            {"window_min": 15, "min_bars": 1, "warm": "w+1", "pkey": "liq15", "optional": 1},
        )
    )
    for w in (30, 60):
        rows.append((f"ret_skew_{w}m", {"window_min": w, "min_bars": 4, "warm": "w+1", "pkey": f"rs{w}"}))
        rows.append((f"ret_kurt_{w}m", {"window_min": w, "min_bars": 4, "warm": "w+1", "pkey": f"rs{w}"}))
    rows.append(("var_95_60m", {"window_min": 60, "min_bars": 10, "warm": "w+1", "pkey": "var60", "q": 5}))
    rows.append(
        ("fft_low_share_64m", {"window_min": 64, "min_bars": 64, "warm": "w+1", "pkey": "dft64", "bins": 4})
    )
    rows.append(("fft_nyquist_share_64m", {"window_min": 64, "min_bars": 64, "warm": "w+1", "pkey": "dft64"}))
    rows.append(("momentum_10m", {"window_min": 10, "min_bars": 1, "warm": "w+1", "pkey": "mom10"}))
    rows.append(("accel_5m", {"window_min": 5, "min_bars": 1, "warm": "2w+1", "pkey": "acc5"}))
    return rows


ALL_FEATURES: tuple[str, ...] = tuple(name for name, _ in _catalogue())
"""Every feature of the per-token kernel, in its output order."""
MAX_DFT_BARS = 64

MARKET_FEATURES = ("mkt_ret_15m", "mkt_ret_60m", "mkt_breadth_15m", "mkt_beta_60m", "mkt_resid_15m")
"""The market context (:mod:`memed.features.market`): in output rows after the kernel's features."""
SHORT_MIN, LONG_MIN = 15, 60
MIN_BETA_BARS = 10


def supports_market(interval_minutes: int) -> bool:
    """Whether bars of this interval express every market window (15 and 60 minutes, and a beta over at
    least ``MIN_BETA_BARS`` bars): 1, 3 and 5 minutes."""
    return SHORT_MIN % interval_minutes == 0 and LONG_MIN // interval_minutes >= MIN_BETA_BARS


def _market_defs(interval_minutes: int) -> list[FeatureDef]:
    bars = LONG_MIN // interval_minutes
    short = SHORT_MIN // interval_minutes
    windows = {"mkt_ret_15m": short, "mkt_ret_60m": bars, "mkt_breadth_15m": short}
    defs = []
    for j, name in enumerate(MARKET_FEATURES):
        w = windows.get(name, bars)
        params = {"window_min": w * interval_minutes, "window_bars": w, "market": 1}
        # market-wide values exist once the market's window is settled; a token's beta and residual
        # after its first bar and then a window of pairs
        defs.append(FeatureDef(name, len(ALL_FEATURES) + j, params, 1 if name in windows else bars + 1))
    return defs


def _bars_for(window_min: int, interval: int, min_bars: int, key: str) -> int:
    if window_min % interval:
        return -1
    bars = window_min // interval
    if key == "dft64" and bars != MAX_DFT_BARS:  # the sliding DFT is sized for exactly 64 bars
        return -1
    return bars if bars >= min_bars else -1


@dataclass(frozen=True)
class FeatureSpec:
    """The features a dataset of a given bar interval gets, and the gap rule they run under."""

    interval_minutes: int
    gap_fill_max_minutes: int
    features: tuple[FeatureDef, ...]
    params: tuple[int, ...] = field(repr=False)
    market: bool = False
    """The market context features follow the kernel's (:mod:`memed.features.market`)."""

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def columns(self) -> np.ndarray:
        """Indices of this spec's features in the kernel's output row."""
        return np.array([f.index for f in self.features], dtype=np.int64)

    @property
    def warmup_bars(self) -> int:
        """Bars after which every non-optional feature has a value: the token is *ready*."""
        return max(f.warmup for f in self.features if not f.optional)

    @cached_property
    def converging(self) -> tuple[tuple[int, int], ...]:
        """``(kernel column, warm-up)`` of the seeded averages: the kernel writes them from their seed on
        (as TA-Lib does), but until their convergence horizon their value depends on where history
        started, so both drivers null them until then."""
        return tuple((f.index, f.warmup) for f in self.features if "seeded" in f.params)

    def mask_converging(self, values: np.ndarray, nbars: np.ndarray) -> None:
        """NaN, in kernel output rows ``values``, the seeded averages of bars (``nbars`` into their
        segment) before their convergence horizon."""
        for col, warm in self.converging:
            values[nbars < warm, col] = np.nan

    def with_warmup_at_most(self, bars: int) -> FeatureSpec:
        """This spec with every warm-up cut to ``bars`` (to measure what a shorter warm-up would expose:
        ``memed check start --warmup``)."""
        return replace(self, features=tuple(replace(f, warmup=min(f.warmup, bars)) for f in self.features))

    @property
    def width(self) -> int:
        """Columns of a full output row: the kernel's features, then the market context's if any."""
        return len(ALL_FEATURES) + (len(MARKET_FEATURES) if self.market else 0)

    def param_vector(self) -> np.ndarray:
        return np.array(self.params, dtype=np.int64)

    def to_dict(self) -> dict[str, object]:
        return {
            **({"market_context": True} if self.market else {}),
            "spec_version": SPEC_VERSION,
            "interval_minutes": self.interval_minutes,
            "gap_fill_max_minutes": self.gap_fill_max_minutes,
            "warmup_bars": self.warmup_bars,
            "features": [
                {"name": f.name, "params": f.params, "warmup": f.warmup, "optional": f.optional}
                for f in self.features
            ],
        }

    @cached_property
    def hash(self) -> str:
        body = json.dumps(self.to_dict(), sort_keys=True).encode()
        here = Path(__file__).parent
        src = (here / "kernel.py").read_bytes()
        if self.market:
            src += b"\0" + (here / "market.py").read_bytes()
        return hashlib.sha256(body + b"\0" + src).hexdigest()[:16]


def build_spec(
    interval_minutes: int = 1, gap_fill_max_minutes: int = 15, market: bool = False
) -> FeatureSpec:
    """The feature specification for a dataset with bars of ``interval_minutes``; with ``market``, the
    market context features too (bars of 1, 3 or 5 minutes)."""
    if interval_minutes < 1:
        raise ValueError("interval_minutes must be >= 1")
    if market and not supports_market(interval_minutes):
        raise ConfigError(
            f"market context needs bars of 1, 3 or 5 minutes (15 and 60 minute windows, a beta over "
            f"{MIN_BETA_BARS}+ bars); this data has {interval_minutes}-minute bars"
        )
    params = dict.fromkeys(layout.PARAM_NAMES, -1)
    params["interval"] = interval_minutes
    params["max_fill_bars"] = gap_fill_max_minutes // interval_minutes
    feats: list[FeatureDef] = []
    for index, (name, d) in enumerate(_catalogue()):
        optional = bool(d.get("optional", 0))
        if "window_min" in d:
            wmin = int(d["window_min"])  # type: ignore[call-overload]
            key = str(d.get("pkey", f"lr{wmin}"))
            bars = _bars_for(wmin, interval_minutes, int(d["min_bars"]), key)  # type: ignore[call-overload]
            if bars < 0:
                continue
            params[key] = bars
            warm = {"w": bars, "w+1": bars + 1, "2w+1": 2 * bars + 1}[str(d["warm"])]
            fparams = {"window_min": wmin, "window_bars": bars}
        else:
            warm = int(d["warmup"])  # type: ignore[call-overload]
            fparams = {k: int(v) for k, v in d.items() if k not in {"warmup", "optional"}}  # type: ignore[call-overload]
        feats.append(FeatureDef(name, index, fparams, warm, optional))
    if market:
        feats.extend(_market_defs(interval_minutes))
    return FeatureSpec(
        interval_minutes=interval_minutes,
        gap_fill_max_minutes=gap_fill_max_minutes,
        features=tuple(feats),
        params=tuple(params[k] for k in layout.PARAM_NAMES),
        market=market,
    )
