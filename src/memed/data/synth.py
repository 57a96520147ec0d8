"""A reproducible synthetic market of memecoin lifecycles, for tests and the demo.

Each token launches at a random minute, pumps (launch drift), lives through pump-and-dump episodes,
news shocks, clustered volume bursts, buy/sell pressure and the occasional liquidity pull, then either
keeps trading, dies into a flat zero-volume tail, or goes silent. Prices move on a relative tick grid
(ties between consecutive closes are common, as in real memecoins), silence leaves short gaps, and all
optional columns (liquidity, buys, sells, market cap) are present.

The same ``seed`` gives the same frame, bit for bit. Model results are never shown on this data alone.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from memed.data.schema import conform

SUPPLY = 1e9  # pump.fun-style fixed supply: market cap = price x supply
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _token_path(rng: np.random.Generator, minutes: int) -> dict[str, np.ndarray]:
    """One token's minute bars over its lifetime (``minutes`` long)."""
    n = minutes
    vol = rng.uniform(0.004, 0.02)  # per-minute log-return volatility
    drift = np.zeros(n)
    launch = min(n, int(rng.integers(10, 60)))
    drift[:launch] = rng.uniform(0.002, 0.02)  # launch pump
    shocks = np.zeros(n)
    # pump-and-dump episodes: a ramp up then a faster crash
    for _ in range(rng.poisson(n / 600)):
        start = int(rng.integers(0, n))
        up = int(rng.integers(10, 60))
        down = int(rng.integers(3, 20))
        gain = rng.uniform(0.3, 2.0)
        drift[start : start + up] += gain / up
        drift[start + up : start + up + down] -= gain * rng.uniform(0.8, 1.3) / down
    # news shocks: single-minute jumps either way
    for _ in range(rng.poisson(n / 400)):
        shocks[int(rng.integers(0, n))] += rng.normal(0, 0.15)
    # liquidity pull: a crash and a collapse of liquidity
    pull = int(rng.integers(n // 2, n)) if rng.random() < 0.15 else -1
    if pull >= 0:
        shocks[pull] -= rng.uniform(1.0, 3.0)
    # volume: AR(1) log-intensity with self-exciting bursts
    logv = np.empty(n)
    level, burst = 0.0, 0.0
    for i in range(n):
        if rng.random() < 0.01:
            burst += rng.uniform(1.0, 3.0)
        burst *= 0.9
        level = 0.95 * level + rng.normal(0, 0.3)
        logv[i] = level + burst
    rets = drift + shocks + vol * np.exp(0.5 * (logv - logv.mean()) / 3) * rng.standard_normal(n)
    price0 = float(np.exp(rng.uniform(np.log(1e-7), np.log(1e-3))))
    logp = np.log(price0) + np.cumsum(rets)
    # ending: keeps trading (45 %), dead flat tail (35 %), silence (20 %)
    fate = rng.random()
    death = int(rng.integers(n // 3, n)) if fate < 0.55 else n
    if death < n:
        logp[death:] = logp[death - 1]
    close = _tick(np.exp(logp))
    opn = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, vol, n))
    high = _tick(np.maximum(opn, close) * np.exp(spread))
    low = _tick(np.minimum(opn, close) * np.exp(-spread))
    volume_usd = np.exp(np.minimum(8 + logv + 0.2 * np.abs(rets) / vol, 16.0)) * rng.uniform(0.5, 1.5, n)
    if death < n:
        high[death:] = low[death:] = opn[death:] = close[death:]
        volume_usd[death:] = 0.0
    pressure = 1 / (1 + np.exp(-np.clip(rets / vol, -20, 20)))
    trades = rng.poisson(volume_usd / 500 + 1).astype(np.int64)
    buys = rng.binomial(trades, pressure).astype(np.float64)
    sells = trades - buys
    liquidity = np.exp(np.log(price0 * SUPPLY * 0.1) + 0.5 * (logp - np.log(price0)))
    if pull >= 0:
        liquidity[pull:] *= 0.02
    if death < n:
        buys[death:] = sells[death:] = 0.0
    keep = np.ones(n, dtype=bool)
    # silence: short gaps of a few minutes, and a silent ending for some dead tokens
    for _ in range(rng.poisson(n / 300)):
        s = int(rng.integers(1, n))
        keep[s : s + int(rng.integers(1, 6))] = False
    if fate >= 0.8 and death < n:
        keep[death + 1 :] = False
    keep[0] = True
    out = {
        "open": opn, "high": high, "low": low, "close": close, "volume": volume_usd,
        "liquidity": liquidity, "buys": buys, "sells": sells, "market_cap": close * SUPPLY,
    }  # fmt: skip
    minute = np.arange(n)
    return {"minute": minute[keep], **{k: v[keep] for k, v in out.items()}}


def _tick(price: np.ndarray) -> np.ndarray:
    """Round to 4 significant digits: memecoin prices move in ticks, so equal closes are common."""
    exponent = np.floor(np.log10(price)) - 3
    ticked: np.ndarray = np.round(price / 10.0**exponent) * 10.0**exponent
    return ticked


def synth_market(tokens: int, minutes: int, seed: int = 0) -> pl.DataFrame:
    """A canonical bar frame of ``tokens`` synthetic tokens over a ``minutes``-long calendar."""
    if tokens < 1 or minutes < 2:
        raise ValueError("need at least 1 token and 2 minutes")
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(tokens):
        launch = int(rng.integers(0, max(1, minutes // 3)))
        bars = _token_path(rng, minutes - launch)
        bars["minute"] = bars["minute"] + launch
        frames.append(pl.DataFrame(bars).with_columns(pl.lit(f"SYN{i:05d}").alias("token")))
    df = pl.concat(frames)
    start = pl.lit(EPOCH).cast(pl.Datetime("us", "UTC"))
    df = df.with_columns((start + pl.duration(minutes=pl.col("minute"))).alias("ts")).drop("minute")
    return conform(df).sort(["token", "ts"])


def random_walk_market(tokens: int, minutes: int, seed: int = 0) -> pl.DataFrame:
    """A market with **no predictability**: every token's log close is a driftless random walk of i.i.d.
    Gaussian steps (volatility 0.2-1 % a minute, no ticks, no gaps, no regimes), volume independent of
    everything. Nothing a model learns here is real, so a policy that trades it after costs is wrong."""
    if tokens < 1 or minutes < 2:
        raise ValueError("need at least 1 token and 2 minutes")
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(tokens):
        vol = rng.uniform(0.002, 0.01)
        close = np.exp(np.log(rng.uniform(1e-6, 1.0)) + np.cumsum(rng.normal(0.0, vol, minutes)))
        opn = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.normal(0, vol / 2, minutes))
        frames.append(pl.DataFrame({
            "token": [f"RW{i:05d}"] * minutes,
            "minute": np.arange(minutes),
            "open": opn, "high": np.maximum(opn, close) * np.exp(spread),
            "low": np.minimum(opn, close) * np.exp(-spread), "close": close,
            "volume": np.exp(rng.normal(8.0, 1.0, minutes)),
        }))  # fmt: skip
    start = pl.lit(EPOCH).cast(pl.Datetime("us", "UTC"))
    df = pl.concat(frames).with_columns((start + pl.duration(minutes=pl.col("minute"))).alias("ts"))
    return conform(df.drop("minute")).sort(["token", "ts"])
