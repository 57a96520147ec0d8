"""freqtrade's data folders: file names, candle types, and the pair ↔ token mapping.

``freqtrade download-data`` writes ``<pair_as_filename>-<timeframe>[-<candle type>].<ext>`` under
``user_data/data/<exchange>/`` (futures in ``futures/``), e.g. ``PEPE_USDT-1m.feather``,
``1000PEPE_USDT_USDT-1m-futures.feather``, ``1000PEPE_USDT_USDT-8h-mark.feather``,
``1000PEPE_USDT_USDT-8h-funding_rate.feather``; formats ``feather``, ``parquet``, ``json`` and
``jsongz`` (``.json.gz``). Only spot and futures candles are prices a token trades at: mark, index,
premium-index and funding-rate files are skipped unless asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PRICE_CANDLES = ("spot", "futures")
OTHER_CANDLES = ("mark", "index", "premiumIndex", "funding_rate")
DATA_SUFFIXES = (".parquet", ".csv", ".feather", ".arrow", ".json", ".json.gz")

_NAME = re.compile(
    r"^(?P<pair>.+?)-(?P<tf>\d+[smhdwM])(?:-(?P<ct>" + "|".join(PRICE_CANDLES + OTHER_CANDLES) + r"))?$"
)
_TIMEFRAME = re.compile(r"^(\d+)([smhdwM])$")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440, "w": 10080, "M": 43200}
_PAIR_CHARS = re.compile(r"[/ .@$+:]")


def data_suffix(path: Path) -> str:
    """The data suffix of a file name (``.json.gz`` counts as one), lower-cased; '' if none."""
    name = path.name.lower()
    return next((s for s in DATA_SUFFIXES if name.endswith(s)), "")


def timeframe_minutes(tf: str) -> int:
    """``1m`` → 1, ``4h`` → 240, ``1d`` → 1440; sub-minute timeframes are refused (bars are minutes)."""
    m = _TIMEFRAME.match(tf.strip())
    if m is None or m.group(2) == "s" or int(m.group(1)) < 1:
        raise ValueError(f"timeframe {tf!r}: expected a whole number of minutes, hours, days or weeks "
                         "(1m, 5m, 1h, 1d, 1w)")  # fmt: skip
    return int(m.group(1)) * _UNIT_MINUTES[m.group(2)]


@dataclass(frozen=True)
class FileName:
    """A freqtrade data file's name, parsed."""

    pair: str
    """As freqtrade writes it into file names (``1000PEPE_USDT_USDT``)."""
    timeframe: str
    candle_type: str
    """``spot`` where the name has none."""

    @property
    def minutes(self) -> int | None:
        try:
            return timeframe_minutes(self.timeframe)
        except ValueError:
            return None

    @property
    def is_price(self) -> bool:
        return self.candle_type in PRICE_CANDLES

    @property
    def token(self) -> str:
        """The token memed calls it: the pair, with the candle type for a non-price file."""
        return self.pair if self.is_price else f"{self.pair}-{self.candle_type}"


def parse_name(path: Path) -> FileName | None:
    """``PAIR-TIMEFRAME[-CANDLETYPE].ext`` parsed; None for a name freqtrade would not have written."""
    suffix = data_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.stem
    m = _NAME.match(stem)
    if m is None:
        return None
    return FileName(m.group("pair"), m.group("tf"), m.group("ct") or "spot")


def pair_to_token(pair: str) -> str:
    """freqtrade's pair → memed's token, as freqtrade writes pairs into file names:
    ``1000PEPE/USDT:USDT`` → ``1000PEPE_USDT_USDT``, ``PEPE/USDT`` → ``PEPE_USDT``."""
    return _PAIR_CHARS.sub("_", pair)


def token_to_pair(token: str) -> str:
    """memed's token → freqtrade's pair, for tokens named the freqtrade way: three parts are a futures
    pair (``1000PEPE_USDT_USDT`` → ``1000PEPE/USDT:USDT``), two a spot pair (``PEPE_USDT`` →
    ``PEPE/USDT``). Anything else (a mint address) has no pair: ValueError."""
    parts = token.split("_")
    if all(parts):
        match parts:
            case [base, quote, settle]:
                return f"{base}/{quote}:{settle}"
            case [base, quote]:
                return f"{base}/{quote}"
    raise ValueError(f"token {token!r} is not a freqtrade pair name (BASE_QUOTE or BASE_QUOTE_SETTLE)")
