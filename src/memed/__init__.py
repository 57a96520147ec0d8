"""memed: a live memecoin tick feed turned into risk-sized trading signals.

One feature engine serves the daemon (``memed run``), the trainers (``memed train``) and the walk-forward
backtester (``memed backtest``), so live and backtest cannot drift apart.
"""

__version__ = "0.1.0"
