"""Decisions to wire signals: the per-minute fast path gives exactly the documented key and values."""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import numpy as np

from conftest import TINY_TOML
from memed.config import parse_config
from memed.daemon.wire import to_signals
from memed.decision import DecisionPath
from memed.models.registry import load_model_set


def test_signals_carry_the_documented_key_and_every_horizon(tiny_registry: Path) -> None:
    cfg = parse_config(TINY_TOML)
    path = DecisionPath(load_model_set(tiny_registry), cfg.signals, cfg.risk)
    tokens = [f"T{i}" for i in range(6)]
    rng = np.random.default_rng(2)
    price = np.exp(rng.normal(size=len(tokens)))
    seen_nan = seen_numbers = False
    for minute in range(29_000_000, 29_000_000 + 600):
        price *= np.exp(rng.normal(size=len(tokens)) * 0.01)
        nan = np.full((4, len(tokens)), np.nan)
        bars = np.ascontiguousarray(
            np.vstack([price, price * 1.002, price * 0.998, price, rng.random(6), nan])
        )
        d = path.process(tokens, float(minute), bars)
        signals = to_signals(d)
        assert [s.token for s in signals] == tokens
        for k, s in enumerate(signals):
            documented = sha256(f"{s.token}|{s.ts}|{d.model_set}".encode()).hexdigest()[:32]
            assert s.key == documented
            for j, h in enumerate(d.horizons):
                want = d.horizon_p[k, j]
                got = s.horizons[str(h)]
                if np.isnan(want):
                    assert got is None
                    seen_nan = True
                else:
                    assert got == want
                    seen_numbers = True
    assert seen_nan  # warming up: no p yet
    assert seen_numbers
