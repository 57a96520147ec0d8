"""Decisions to wire signals: the per-minute columnar path gives exactly the documented key and values, and
every edge (batch array, JSONL lines, per-token structs, the latest-signal map) reads back the same ones."""

from __future__ import annotations

import json
import math
from hashlib import sha256
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from conftest import TINY_TOML
from memed.config import parse_config
from memed.daemon.latest import LatestSignals
from memed.daemon.wire import KeyCache, iso_minute, signal_frame
from memed.decision import DecisionPath, Decisions
from memed.decision.result import PLAN_COLUMNS
from memed.models.registry import load_model_set
from memed.signals.frame import SignalFrame
from memed.signals.policy import ACTIONS, REASONS, SIDES
from memed.signals.risk import CAPS
from memed.signals.schema import Risk, Signal

RISK_FIELDS = ("entry", "stop_loss", "take_profit", "position_size", "notional", "risk_reward")


def _same_values(d: Decisions) -> tuple[bool, bool, bool]:
    """Every edge's signals of ``d`` against the documented mapping from its arrays, row by row; whether
    it held an absent p, a number and a trade."""
    frame = signal_frame(d)
    signals = frame.signals()
    assert [s.token for s in signals] == d.tokens.to_list()
    assert [msgspec.json.decode(line, type=Signal) for line in frame.ndjson().splitlines()] == signals
    # the batch topic's array and the per-token messages, read by another parser
    assert json.loads(frame.json()) == [json.loads(msgspec.json.encode(sig)) for sig in signals]
    # the batch topic's Arrow file, read by pyarrow: the same rows as the JSON array
    assert pa_ipc.open_file(pa.py_buffer(frame.arrow())).read_all().to_pylist() == json.loads(frame.json())
    seen = [False, False, False]
    r = d.risk
    for k, s in enumerate(signals):
        documented = sha256(f"{s.token}|{s.ts}|{d.model_set}".encode()).hexdigest()[:32]
        assert s.key == documented
        assert (s.action, s.reason, s.side) == (ACTIONS[d.action[k]], REASONS[d.reason[k]], SIDES[d.side[k]])
        assert s.strength == d.strength[k]
        assert s.p_up == (None if np.isnan(d.p[k]) else d.p[k])
        for j, h in enumerate(d.horizons):
            want = d.horizon_p[k, j]
            assert s.horizons[str(h)] == (None if np.isnan(want) else want)
            seen[bool(np.isfinite(want))] = True
        if np.isfinite(r.notional[k]):
            plan = {
                name: getattr(r, column)[k] for name, column in zip(RISK_FIELDS, PLAN_COLUMNS, strict=True)
            }
            assert s.risk == Risk(**plan, capped_by=CAPS[r.cap[k]], hold_minutes=d.hold_minutes)
            seen[2] = True
        else:
            assert s.risk is None
    return seen[0], seen[1], seen[2]


def test_signals_carry_the_documented_key_and_every_value(tiny_registry: Path) -> None:
    cfg = parse_config(TINY_TOML)
    path = DecisionPath(load_model_set(tiny_registry), cfg.signals, cfg.risk)
    tokens = [f"T{i}" for i in range(6)]
    rng = np.random.default_rng(2)
    price = np.exp(rng.normal(size=len(tokens)))
    seen = np.zeros(3, bool)
    for minute in range(29_000_000, 29_000_000 + 600):
        price *= np.exp(rng.normal(size=len(tokens)) * 0.01)
        nan = np.full((4, len(tokens)), np.nan)
        bars = np.ascontiguousarray(
            np.vstack([price, price * 1.002, price * 0.998, price, rng.random(6), nan])
        )
        d = path.process(tokens, float(minute), bars)
        seen |= _same_values(d)
    assert seen[0]  # warming up: no p yet
    assert seen[1]
    # a trade's plan (the tiny set rarely opens one): its arrays filled in as the risk sizing does
    d.action[0], d.side[0], d.risk.cap[0] = ACTIONS.index("BUY"), SIDES.index("long"), CAPS.index("equity")
    for field, value in zip(PLAN_COLUMNS, (1.25, 1.0, 1.75, 3.5e-7, 4.375e-7, 2.0), strict=True):
        getattr(d.risk, field)[0] = value
    assert _same_values(d)[2]


def test_keys_hashed_ahead_are_the_documented_keys() -> None:
    cache = KeyCache()
    cache.prepare(["A", "B", "C"], 29_000_001, "set1")
    for tokens, minute, model_set in ((["C", "A", "NEW"], 29_000_001, "set1"), (["A"], 29_000_002, "set1"),
                                      (["B"], 29_000_001, "set2")):  # fmt: skip
        stamp = iso_minute(minute)
        documented = [sha256(f"{t}|{stamp}|{model_set}".encode()).hexdigest()[:32] for t in tokens]
        assert cache.keys(tokens, minute, model_set) == documented


EDGES = [
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -0.0,
    0.1,
    1 / 3,
    1e16,
    123456789012345678.0,
]


def _signal(token: str, x: float, horizons: tuple[str, ...] = ("15", "60")) -> Signal:
    risk = Risk(entry=x, stop_loss=x / 3, take_profit=-x, position_size=x * 0.7, notional=x,
                risk_reward=2.0, capped_by="equity", hold_minutes=60)  # fmt: skip
    return Signal(key=f"k{token}", token=token, ts="2026-01-01T00:00:00Z", action="BUY", strength=x, p_up=x,
                  horizons={h: (None if i else x) for i, h in enumerate(horizons)}, reason="", side="long",
                  risk=risk, model_set="s", feature_spec="f")  # fmt: skip


def test_every_double_reads_back_bit_for_bit_from_the_frames_json() -> None:
    """The batch array and the JSONL lines are polars' encoding, the per-token structs msgspec's decoding
    of it: subnormal, huge, negative zero and long fractions all come back as the same double."""
    signals = [
        _signal(f"T{i}", x)
        for i, x in enumerate(EDGES + np.random.default_rng(3).lognormal(0, 30, 200).tolist())
    ]
    frame = SignalFrame.from_signals(signals)
    back = frame.signals()
    assert back == signals
    assert [math.copysign(1, a.strength) for a in back] == [math.copysign(1, b.strength) for b in signals]
    assert [msgspec.json.decode(line, type=Signal) for line in frame.ndjson().splitlines()] == signals
    arrow = pa_ipc.open_file(pa.py_buffer(frame.arrow())).read_all().to_pylist()
    assert [msgspec.convert(row, Signal) for row in arrow] == signals  # the Arrow file's doubles too
    assert [math.copysign(1, row["strength"]) for row in arrow] == [
        math.copysign(1, b.strength) for b in signals
    ]
    assert frame.take([1, 3]).signals() == [signals[1], signals[3]]
    assert SignalFrame.from_signals([]).json() == b"[]"


def test_the_latest_signals_follow_each_token_and_survive_a_change_of_horizons() -> None:
    latest = LatestSignals()
    latest.update(SignalFrame.from_signals([_signal("A", 1.0), _signal("B", 2.0)]))
    latest.update(SignalFrame.from_signals([_signal("B", 3.0), _signal("C", 4.0)]))
    assert dict(latest) == {"A": _signal("A", 1.0), "B": _signal("B", 3.0), "C": _signal("C", 4.0)}
    # a model set with other horizons: the rows it has not replaced stay exactly as they were sent
    latest.update(SignalFrame.from_signals([_signal("C", 5.0, ("30",))]))
    assert latest["A"] == _signal("A", 1.0)
    assert latest["C"] == _signal("C", 5.0, ("30",))
    latest.update(SignalFrame.from_signals([_signal("A", 6.0, ("30",))]))
    latest.forget(["B"])
    assert sorted(latest) == ["A", "C"]
    assert msgspec.json.decode(latest.json(), type=dict[str, Signal]) == {
        "A": _signal("A", 6.0, ("30",)), "C": _signal("C", 5.0, ("30",))}  # fmt: skip
    assert "B" not in latest
    assert len(latest) == 2
