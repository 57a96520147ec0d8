"""Champion and challenger: a challenger served in shadow is promoted only when it beats the champion on
delayed labels — a better one is, a worse one is not — at the minute the evidence says."""

from __future__ import annotations

from pathlib import Path

import msgspec
import polars as pl
import pytest

from broker import Mosquitto
from daemon_helpers import daemon_config, read_jsonl, serve_market, signal_minute
from memed.config import MemedConfig
from memed.daemon.app import Daemon
from memed.data import synth_market
from memed.decision import DecisionPath
from memed.models.registry import load_model_set, resolve
from memed.monitor.challenger import judge
from memed.monitor.stream import ScoreStream, Snapshot, score_history

MARGIN, MIN_LABELS = 0.005, 1000


def snapshots(registry: Path, market: pl.DataFrame, cfg: MemedConfig) -> list[Snapshot]:
    dec = DecisionPath(load_model_set(registry), cfg.signals, cfg.risk).process_history(market)
    return score_history(dec, ScoreStream(dec.horizons, window_minutes=1440, every_minutes=60))


def first_promotion(champion: Path, challenger: Path, market: pl.DataFrame, cfg: MemedConfig) -> int | None:
    """The snapshot minute at which the evidence first says promote (from the two replays)."""
    for a, b in zip(snapshots(champion, market, cfg), snapshots(challenger, market, cfg), strict=True):
        if judge(a.scores, b.scores, MARGIN, MIN_LABELS).promote:
            return a.minute
    return None


def test_the_verdict() -> None:
    champion = {"15": {"n": 5000, "log_loss": 0.70}, "60": {"n": 5000, "log_loss": 0.72}}
    better = {"15": {"n": 5000, "log_loss": 0.69}, "60": {"n": 5000, "log_loss": 0.71}}
    assert judge(champion, better, 0.005, 1000).promote
    assert not judge(champion, better, 0.02, 1000).promote  # not by the margin
    assert not judge(better, champion, 0.0, 1000).promote  # worse
    few = {"15": {"n": 999, "log_loss": 0.5}, "60": {"n": 5000, "log_loss": 0.5}}
    verdict = judge(champion, few, 0.005, 1000)
    assert not verdict.promote
    assert "fewer than 1000" in verdict.reason


@pytest.mark.broker
@pytest.mark.parametrize("better", [True, False], ids=["better-challenger", "worse-challenger"])
async def test_a_challenger_is_promoted_only_on_evidence(
    better: bool, tiny_registry: Path, walk_registry: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # the synthetic market's own logistic model against one trained on random walks: on a synthetic market
    # the first is better calibrated (log loss 0.680 against 0.696 over the horizons, measured)
    champion, challenger = (walk_registry, tiny_registry) if better else (tiny_registry, walk_registry)
    market = synth_market(12, 700, seed=21)
    cfg = daemon_config(champion, mosquitto.url, tmp_path, queue_minutes=100_000, close_on_expected=False)
    cfg = msgspec.structs.replace(cfg, signals=msgspec.structs.replace(cfg.signals, models=("logreg",)))
    want = first_promotion(champion, challenger, market, cfg)
    assert (want is not None) == better
    monitor = msgspec.structs.replace(cfg.monitor, challenger=str(resolve(challenger)), promote_margin=MARGIN,
                                      promote_min_labels=MIN_LABELS)  # fmt: skip
    daemon = Daemon(msgspec.structs.replace(cfg, monitor=monitor))
    champion_id, challenger_id = load_model_set(champion).id, load_model_set(challenger).id
    await serve_market(daemon, market, mosquitto.url)
    got = read_jsonl(tmp_path / "signals.jsonl")
    sets = {signal_minute(ts): d["model_set"] for (_, ts), d in got.items()}
    if not better:
        assert daemon.path.model_set.id == champion_id
        assert set(sets.values()) == {champion_id}
        assert daemon.metrics.promotions._value.get() == 0  # type: ignore[attr-defined]
        return
    assert daemon.path.model_set.id == challenger_id
    assert daemon.metrics.promotions._value.get() == 1  # type: ignore[attr-defined]
    assert want is not None
    assert {m for m, s in sets.items() if s == challenger_id} == {m for m in sets if m > want}
    assert daemon.monitoring.shadow is None
