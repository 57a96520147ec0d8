"""memed: a live memecoin tick feed turned into risk-sized trading signals.

One feature engine serves the daemon (``memed run``), the trainers (``memed train``) and the walk-forward
backtester (``memed backtest``), so live and backtest cannot drift apart.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("memed")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
