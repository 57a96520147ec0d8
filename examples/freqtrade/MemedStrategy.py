"""A freqtrade strategy that trades memed's signals, with memed's stop, take-profit and size.

Copy this file and ``memed_signals.py`` into ``user_data/strategies/``, then add to the bot's config:

    "memed_url": "http://127.0.0.1:8787",            live / dry-run: the daemon's HTTP endpoint
    "memed_signals_file": "memed-out/signals.parquet"  backtesting: what `memed backtest` wrote

Live and dry-run, each new candle asks the daemon for the pair's latest signal
(``/signals/latest?token=``); in backtesting, memed's ``signals.parquet`` is merged by date. Either way a
BUY sets ``enter_long`` on the candle of the signal's bar (freqtrade fills at the next open, as memed's
backtester does), a SELL sets ``exit_long``, and the position takes memed's plan: the stop through
``custom_stoploss`` (``stoploss_from_absolute``), the take-profit through ``custom_exit`` and the size
through ``custom_stake_amount`` (memed's notional, capped by freqtrade's ``max_stake``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from freqtrade.persistence import Trade
from freqtrade.strategy import IStrategy, stoploss_from_absolute
from memed_signals import fetch_latest, pair_to_token, signal_columns, wire_signal


class MemedStrategy(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"  # the bar interval of the memed model set (memed refuses another)
    can_short = False  # memed's default is long-only (signals.sides = "long")
    minimal_roi = {"0": 100.0}  # noqa: RUF012 - freqtrade's attribute; exits are memed's SELL, stop, take
    stoploss = -0.99  # replaced by memed's stop once a trade is open
    use_custom_stoploss = True
    process_only_new_candles = True
    startup_candle_count = 0

    _backtest: pd.DataFrame | None = None

    def _signals_for(self, token: str) -> list[dict[str, Any]]:
        if self.dp.runmode.value in ("live", "dry_run"):
            doc = fetch_latest(self.config.get("memed_url", "http://127.0.0.1:8787"), token)
            return [wire_signal(doc)] if doc else []
        if self._backtest is None:
            frame = pd.read_parquet(self.config["memed_signals_file"])
            frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
            self._backtest = frame
        rows = self._backtest[self._backtest["token"] == token]
        return [
            {
                "ts": r.ts.to_pydatetime(),
                "action": r.action,
                "side": r.side,
                "stop_loss": r.stop_loss,
                "take_profit": r.take_profit,
                "notional": r.notional,
            }
            for r in rows.itertuples()
        ]

    def populate_indicators(self, dataframe: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame:
        dates = [d.to_pydatetime() for d in dataframe["date"]]
        for name, values in signal_columns(dates, self._signals_for(pair_to_token(metadata["pair"]))).items():
            dataframe[name] = values
        return dataframe

    def populate_entry_trend(self, dataframe: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame:
        dataframe.loc[dataframe["enter_long"] == 1, "enter_tag"] = "memed"
        return dataframe

    def populate_exit_trend(self, dataframe: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame:
        return dataframe  # exit_long is memed's SELL, set in populate_indicators

    def _entry_plan(self, pair: str, trade: Trade) -> pd.Series | None:
        """The candle whose signal opened ``trade`` (the one before its fill)."""
        df, _ = self.dp.get_analyzed_dataframe(pair, self.timeframe)
        signal_bar = trade.open_date_utc - timedelta(minutes=1)
        rows = df.loc[(df["date"] <= signal_bar) & (df["enter_long"] == 1)]
        return None if rows.empty else rows.iloc[-1]

    def custom_stoploss(
        self,
        pair: str,
        trade: Trade,
        current_time: datetime,
        current_rate: float,
        current_profit: float,
        after_fill: bool,
        **kwargs: Any,
    ) -> float | None:
        plan = self._entry_plan(pair, trade)
        if plan is None or pd.isna(plan["memed_stop"]):
            return None
        return stoploss_from_absolute(
            float(plan["memed_stop"]), current_rate, is_short=trade.is_short, leverage=trade.leverage
        )

    def custom_exit(
        self,
        pair: str,
        trade: Trade,
        current_time: datetime,
        current_rate: float,
        current_profit: float,
        **kwargs: Any,
    ) -> str | None:
        plan = self._entry_plan(pair, trade)
        if plan is not None and not pd.isna(plan["memed_take"]) and current_rate >= float(plan["memed_take"]):
            return "memed_take_profit"
        return None

    def custom_stake_amount(
        self,
        pair: str,
        current_time: datetime,
        current_rate: float,
        proposed_stake: float,
        min_stake: float | None,
        max_stake: float,
        leverage: float,
        entry_tag: str | None,
        side: str,
        **kwargs: Any,
    ) -> float:
        df, _ = self.dp.get_analyzed_dataframe(pair, self.timeframe)
        notional = df["memed_notional"].iloc[-1] if len(df) else None
        if notional is None or pd.isna(notional) or notional <= 0:
            return proposed_stake
        return min(max_stake, float(notional))
