"""The online learner (``signals.online``): it learns from exactly the trainer's labels, in event-time
order, votes once it has learned enough, restores exactly from a checkpoint that holds no pickle, and the
history driver gives what the minute driver gives. (The daemon with it on, through kills and restarts
over Mosquitto, is in test_daemon_recovery.)"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest

from memed.config import MemedConfig, OnlineConfig
from memed.data import bar_matrix, epoch_minutes, run_bounds, synth_market
from memed.decision import DecisionPath, Decisions
from memed.models.registry import load_model_set
from memed.trainers.labels import add_labels, label_col

ONLINE = OnlineConfig(enabled=True, horizons=(15, 60), min_labels=300, learning_rate=0.05)


def online_path(registry: Path, online: OnlineConfig = ONLINE) -> DecisionPath:
    cfg = MemedConfig()
    signals = msgspec.structs.replace(cfg.signals, online=online)
    return DecisionPath(load_model_set(registry), signals, cfg.risk)


def minutes(market: pl.DataFrame) -> list[tuple[list[str], int, np.ndarray]]:
    bars = market.sort("ts", "token")
    ts, x, tokens = epoch_minutes(bars["ts"]), bar_matrix(bars), bars["token"].to_list()
    return [(tokens[a:b], int(ts[a]), np.ascontiguousarray(x[:, a:b]))
            for a, b in itertools.pairwise(run_bounds(ts))]  # fmt: skip


def wire(parts: list[Decisions]) -> bytes:
    """Everything a minute's decisions say, comparable byte for byte (NaN included)."""
    return msgspec.msgpack.encode([(d.tokens.to_list(), {k: v.tobytes() for k, v in d.columns().items()})
                                   for d in parts])  # fmt: skip


def test_the_learner_learns_the_trainers_labels_and_then_votes(tiny_registry: Path) -> None:
    market = synth_market(8, 700, seed=11)
    path = online_path(tiny_registry)
    parts = [path.process(t, float(m), x) for t, m, x in minutes(market)]
    online = path.online
    assert online is not None
    # it learned from every label of every ready bar: the trainer's own, counted per horizon
    fitted = DecisionPath(load_model_set(tiny_registry), MemedConfig().signals, MemedConfig().risk)
    hist = fitted.process_history(market)  # rows by time then token, as the labels below
    ready = pl.DataFrame({"ready": ~np.isnan(hist.horizon_p[:, 0])})
    labelled = add_labels(market.sort("token", "ts"), [15, 60], "exclude").sort("ts", "token")
    for h, learner in zip(online.learned, online.learners, strict=True):
        want = labelled.with_columns(ready["ready"]).filter(
            pl.col("ready") & pl.col(label_col(h)).is_not_null()
        )
        assert learner.labels == want.height > 1000, h
    # it abstains until min_labels, then votes on every ready row, with probabilities of its own
    p = np.concatenate([d.members["online"] for d in parts])
    k15 = path.model_set.manifest.horizons.index(15)
    voted = ~np.isnan(p[:, k15])
    first = int(np.argmax(voted))
    assert first > 0
    assert voted[first:].mean() > 0.9
    assert np.isnan(p[:, path.model_set.manifest.horizons.index(30)]).all()  # not a learned horizon
    assert 0.0 < p[voted, k15].min() < p[voted, k15].max() < 1.0
    assert p[voted, k15].std() > 1e-3
    # and the ensemble counts it: the ensemble's p differs from the fitted members' alone
    alone = np.concatenate([fitted.process(t, float(m), x).horizon_p for t, m, x in minutes(market)])
    both = np.concatenate([d.horizon_p for d in parts])
    assert not np.allclose(both[voted, k15], alone[voted, k15])


def test_the_learner_restores_exactly_from_a_checkpoint_without_pickle(tiny_registry: Path) -> None:
    market = synth_market(6, 1000, seed=4)
    steps = minutes(market)
    cut = len(steps) * 3 // 5  # past the warm-up, with labels learned and more to come
    whole = online_path(tiny_registry)
    want = [whole.process(t, float(m), x) for t, m, x in steps]
    first = online_path(tiny_registry)
    head = [first.process(t, float(m), x) for t, m, x in steps[:cut]]
    blob = first.snapshot()
    doc = msgspec.msgpack.decode(blob[16:])
    learners = doc["online"]["learners"]  # plain numbers by name (JSON would do), no pickled object
    assert msgspec.json.decode(msgspec.json.encode(learners)) == learners
    assert learners[0]["labels"] > 0
    assert set(learners[0]["weights"]) == set(first.model_set.manifest.feature_names)
    ms = load_model_set(tiny_registry)
    second = DecisionPath.restore(ms, first.signals, first.risk, blob)
    tail = [second.process(t, float(m), x) for t, m, x in steps[cut:]]
    assert wire(head + tail) == wire(want)
    assert not np.isnan(np.concatenate([d.members["online"] for d in tail])).all()  # it voted after the cut
    # the history driver (minute by minute with the learner on) says the same
    hist = whole.process_history(market)
    flat = Decisions.concat(want, hist.horizons, hist.model_set, hist.feature_spec, hist.hold_minutes)
    assert wire([dataclasses.replace(hist, features=None, ready=None)]) == wire([flat])


def test_a_missing_river_is_one_clear_error(tiny_registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from memed.errors import ConfigError

    monkeypatch.setitem(sys.modules, "river", None)
    with pytest.raises(ConfigError, match=r"pip install 'memed\[online\]'"):
        online_path(tiny_registry)
