"""A minute's signals as one columnar frame: the wire's single encoder.

Every sink's bytes come from one :class:`SignalFrame` — a polars frame whose columns are the fields of
:class:`~memed.signals.schema.Signal` in their wire order (``horizons`` and ``risk`` as structs, absent
values as nulls). The batch topic, the webhook's array and the JSONL file encode it whole in polars, with
no Python object per signal; the per-token topics and the chat webhooks take :meth:`SignalFrame.signals`,
which decodes that same JSON into :class:`Signal` structs, so a consumer reads the same values on every
edge. Floats are written as the shortest text that reads back to the same double (checked in the tests).

"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import polars as pl

from memed.signals.schema import Signal

RISK_SCHEMA = pl.Struct(
    {
        "entry": pl.Float64,
        "stop_loss": pl.Float64,
        "take_profit": pl.Float64,
        "position_size": pl.Float64,
        "notional": pl.Float64,
        "risk_reward": pl.Float64,
        "capped_by": pl.String,
        "hold_minutes": pl.Int64,
    }
)
_SIGNALS = msgspec.json.Decoder(list[Signal])


def frame_schema(horizons: Sequence[str]) -> pl.Schema:
    """The frame's columns for signals carrying these horizon names (minutes, as strings)."""
    f64, text = pl.Float64(), pl.String()
    columns: dict[str, pl.DataType] = {
        "version": pl.Int64(),
        "key": text,
        "token": text,
        "ts": text,
        "action": text,
        "strength": f64,
        "p_up": f64,
        "horizons": pl.Struct(dict.fromkeys(horizons, f64)),
        "reason": text,
        "side": text,
        "risk": RISK_SCHEMA,
        "model_set": text,
        "feature_spec": text,
    }
    return pl.Schema(columns)


class SignalFrame:
    """One minute's signals (any subset of them, in order); see the module's description."""

    __slots__ = ("frame",)

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame

    @classmethod
    def from_signals(cls, signals: Sequence[Signal]) -> SignalFrame:
        """The frame of ``signals`` (they share one model set's horizons); for signals read back from a
        checkpoint and for tests, not the per-minute path."""
        names = list(signals[0].horizons) if signals else []
        rows: list[dict[str, Any]] = msgspec.to_builtins(list(signals))
        return cls(pl.DataFrame(rows, schema=frame_schema(names)))

    def __len__(self) -> int:
        return self.frame.height

    def tokens(self) -> list[str]:
        out: list[str] = self.frame.get_column("token").to_list()
        return out

    def take(self, rows: Sequence[int] | range | np.ndarray) -> SignalFrame:
        """The signals at ``rows`` (ascending row numbers)."""
        if len(rows) == len(self):
            return self
        return SignalFrame(self.frame[np.asarray(rows, dtype=np.int64)])

    def json(self) -> bytes:
        """All the signals as one JSON array (the batch topic, the webhook's ``batch`` body)."""
        return self.frame.write_json().encode() if len(self) else b"[]"

    def arrow(self) -> bytes:
        """All the signals as one Arrow IPC file (LZ4 frames; the oldest Arrow types, so any Arrow reader
        of the last years reads it)."""
        out = io.BytesIO()
        self.frame.write_ipc(out, compression="lz4", compat_level=pl.CompatLevel.oldest())
        return out.getvalue()

    def ndjson(self) -> bytes:
        """One JSON line per signal (the JSONL file)."""
        return self.frame.write_ndjson().encode() if len(self) else b""

    def signals(self) -> list[Signal]:
        """Each signal as a :class:`Signal`, decoded from :meth:`json` (the per-token edges)."""
        return _SIGNALS.decode(self.json())


__all__ = ["RISK_SCHEMA", "SignalFrame", "frame_schema"]
