"""Served probabilities do not depend on where a token's history starts (when the daemon was started):
every family, cut an hour and a day into the past, agrees to 1e-6 past the warm-up -- the LSTM because
it serves nothing in a run's first ``burn_in`` steps, which cover how long its state takes to forget."""

from __future__ import annotations

from pathlib import Path

import msgspec

from conftest import real_bars
from memed.data.loaders import load_dataset
from memed.decision.served import served_probabilities
from memed.models.registry import load_model_set
from memed.trainers.leakage import check_start_invariance

DEMO = Path(__file__).parents[1] / "src" / "memed" / "demo_models"


def test_the_packaged_set_serves_the_same_probabilities_wherever_history_starts() -> None:
    model_set = load_model_set(DEMO)
    stateful = [e for e in model_set.manifest.models if e.kind == "stateful"]
    assert stateful
    assert all(0 < e.forgets_after <= e.burn_in for e in stateful)
    bars = real_bars("binance-futures-1m").group_by("token", maintain_order=True).head(3000)
    report = check_start_invariance(bars, lambda b: served_probabilities(model_set, b))
    assert report.rows_checked > 5_000
    assert report.ok, report.drift


def test_every_family_serves_the_same_probabilities_wherever_history_starts(
    tiny_registry: Path, tiny_market: Path
) -> None:
    model_set = load_model_set(tiny_registry)
    assert {e.kind for e in model_set.manifest.models} == {"tabular", "stateful", "window"}
    bars, _ = load_dataset([tiny_market])
    report = check_start_invariance(bars, lambda b: served_probabilities(model_set, b), cuts=(60, 300))
    assert report.rows_checked > 5_000
    assert report.ok, report.drift


def test_without_its_burn_in_the_lstm_depends_on_where_history_starts() -> None:
    """The check is not blind to a stateful model: served from its first ready step, the LSTM differs."""
    model_set = load_model_set(DEMO, models=("lstm",))
    runner = model_set.runners["lstm"]
    runner.entry = msgspec.structs.replace(runner.entry, burn_in=0)
    bars = real_bars("binance-futures-1m").group_by("token", maintain_order=True).head(3000)
    report = check_start_invariance(bars, lambda b: served_probabilities(model_set, b), cuts=(60,))
    assert set(report.drift) == {f"lstm_p{h}" for h in model_set.manifest.horizons}
    assert all(d.bars_to_agree > 0 for d in report.drift.values())
