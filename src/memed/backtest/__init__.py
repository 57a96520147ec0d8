"""Walk-forward backtesting: plan, replay through the daemon's decision path, execution simulation,
metrics and the HTML report (``memed backtest``)."""
