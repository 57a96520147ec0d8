"""Trades → one-minute bars, in event time: the one aggregator every trade feed goes through.

* A trade belongs to the minute of its timestamp (for a feed without timestamps, such as PumpPortal,
  the moment it arrived). Open, high, low and close are trade prices in arrival order within a
  minute; volume is the quote amount traded; buys and sells count trades by side; liquidity and market
  cap are the last trade's.
* A minute closes ``grace_seconds`` after it ended on the clock passed to :meth:`TradeBars.close`;
  its bars are emitted once and never revised. **Late-trade policy**: a trade for a minute already
  closed is dropped and counted (``late``) — the daemon would reject the revised bar as late anyway.
* Each trade's signature is remembered (the last ``max_signatures``): a resent trade is dropped and
  counted (``duplicate``). A minute without trades has no bar (silence, which memed's gap rule handles).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from memed.feeds.ticks import FeedTick


@dataclass(frozen=True)
class Trade:
    token: str
    ts: float
    """Epoch seconds."""
    price: float
    quote: float
    """Quote amount traded (SOL, USD ...): the bar's volume."""
    side: Literal["buy", "sell"]
    signature: str
    liquidity: float | None = None
    market_cap: float | None = None


@dataclass
class _Bar:
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    buys: int = 0
    sells: int = 0
    liquidity: float | None = None
    market_cap: float | None = None

    def take(self, t: Trade) -> None:
        self.high = max(self.high, t.price)
        self.low = min(self.low, t.price)
        self.close = t.price
        self.volume += t.quote
        if t.side == "buy":
            self.buys += 1
        else:
            self.sells += 1
        if t.liquidity is not None:
            self.liquidity = t.liquidity
        if t.market_cap is not None:
            self.market_cap = t.market_cap


@dataclass
class TradeBars:
    grace_seconds: float = 2.0
    max_signatures: int = 100_000
    counts: Counter[str] = field(default_factory=Counter)
    closed_through: int = -1
    """The newest closed minute (epoch minutes)."""
    _bars: dict[tuple[int, str], _Bar] = field(default_factory=dict)
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def add(self, t: Trade) -> str | None:
        """Take a trade; the reason when it is dropped (``duplicate``, ``late``, ``bad_price``)."""
        if t.signature in self._seen:
            return self._count("duplicate")
        self._seen[t.signature] = None
        if len(self._seen) > self.max_signatures:
            self._seen.popitem(last=False)
        if not (t.price > 0 and t.quote >= 0):
            return self._count("bad_price")
        minute = int(t.ts // 60)
        if minute <= self.closed_through:
            return self._count("late")
        bar = self._bars.get((minute, t.token))
        if bar is None:
            bar = self._bars[(minute, t.token)] = _Bar(t.price, t.price, t.price, t.price)
        bar.take(t)
        self.counts["trades"] += 1
        return None

    def _count(self, reason: str) -> str:
        self.counts[reason] += 1
        return reason

    def close(self, now: float) -> list[FeedTick]:
        """The bars of every minute that ended at least ``grace_seconds`` before ``now``, oldest first."""
        through = int((now - self.grace_seconds) // 60) - 1
        if through <= self.closed_through:
            return []
        self.closed_through = through
        done = sorted(k for k in self._bars if k[0] <= through)
        out = []
        for key in done:
            b = self._bars.pop(key)
            out.append(FeedTick(key[1], key[0] * 60, b.open, b.high, b.low, b.close, b.volume, b.liquidity,
                                float(b.buys), float(b.sells), b.market_cap))  # fmt: skip
        return out
