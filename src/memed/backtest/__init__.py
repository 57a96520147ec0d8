"""Walk-forward backtesting: plan, replay through the daemon's decision path, execution simulation,
metrics and the HTML report (``memed backtest``)."""

from memed.backtest.plan import Fold, check_embargo, plan_folds
from memed.backtest.replay import replay_signals, replay_signals_minutewise
from memed.backtest.run import run_backtest
from memed.backtest.simulator import SimResult, market_bars, simulate

__all__ = [
    "Fold",
    "SimResult",
    "check_embargo",
    "market_bars",
    "plan_folds",
    "replay_signals",
    "replay_signals_minutewise",
    "run_backtest",
    "simulate",
]
