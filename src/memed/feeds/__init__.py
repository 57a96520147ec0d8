"""Feed adapters: pure functions from each market-data source's payload to memed ticks (the JSON objects
``memed run`` reads from MQTT), and the one trade → minute-bar aggregator trade feeds go through. Nothing
here opens a connection: ``memed feed`` (:mod:`memed.feeds.client`) does the network and calls these.

* :mod:`memed.feeds.binance`: kline websocket events and REST klines (a bar only once it is final).
* :mod:`memed.feeds.geckoterminal`: pool OHLCV (``data.attributes.ohlcv_list``).
* :mod:`memed.feeds.birdeye`: OHLCV (``data.items``).
* :mod:`memed.feeds.pumpportal`: pump.fun trades, through :class:`memed.feeds.trades.TradeBars`.
* :mod:`memed.feeds.dexscreener`: pair snapshots that enrich ticks with liquidity, buys/sells and
  market cap.
"""

from memed.feeds.ticks import FeedTick

__all__ = ["FeedTick"]
