"""The served-feature log and its offline parity check: what the minute driver served, recomputed with the
batch drivers, is equal bit for bit; a planted late tick or a restart that lost state is found and named.
(The daemon's own log, through kills and restarts over Mosquitto, is checked in test_daemon_recovery.)"""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from memed.cli.main import cli
from memed.config import MemedConfig
from memed.data import bar_matrix, epoch_minutes, run_bounds, synth_market
from memed.decision import DecisionPath
from memed.models.registry import load_model_set
from memed.monitor.parity import check_parity
from memed.monitor.served_log import ServedLog, read_log

MODELS = ("logreg", "lgbm", "lstm")  # a stateless, a tree and a sequence model (state across minutes)


def gappy(seed: int = 5) -> pl.DataFrame:
    """Six tokens over 500 minutes, 8 % of the bars missing (gaps the features fill or restart on)."""
    market = synth_market(6, 500, seed=seed)
    keep = np.random.default_rng(seed).random(market.height) > 0.08
    return market.filter(pl.Series(keep))


def serve(market: pl.DataFrame, registry: Path, log: Path, fault: str = "", share: float = 1.0) -> int:
    """The minute driver over ``market``, logged as the daemon logs it; ``fault``: ``late`` (one bar kept
    from the path and logged as a late tick) or ``restart`` (a fresh path and run at the middle minute).
    Returns the faulted minute."""
    cfg = MemedConfig()
    signals = msgspec.structs.replace(cfg.signals, models=MODELS)
    ms = load_model_set(registry)
    path = DecisionPath(ms, signals, cfg.risk)
    m = ms.manifest
    served = ServedLog(log, share, m.feature_names, m.horizons, run="run-1")
    bars = market.sort("ts", "token")
    ts, x, tokens = epoch_minutes(bars["ts"]), bar_matrix(bars), bars["token"].to_list()
    cuts = list(itertools.pairwise(run_bounds(ts)))
    middle = int(ts[cuts[len(cuts) // 2][0]])
    for a, b in cuts:
        minute, names, mx = int(ts[a]), tokens[a:b], np.ascontiguousarray(x[:, a:b])
        if minute == middle and fault == "late":
            served.late(names[0], minute, tuple(mx[:, 0].tolist()))
            names, mx = names[1:], np.ascontiguousarray(mx[:, 1:])
        if minute == middle and fault == "restart":
            served.flush()
            path = DecisionPath(ms, signals, cfg.risk)
            served = ServedLog(log, share, m.feature_names, m.horizons, run="run-2")
        served.served(minute, names, mx, path.process(names, float(minute), mx))
    served.flush()
    return middle


@pytest.mark.parametrize("fault", ["", "late", "restart"])
def test_the_parity_check_finds_nothing_but_planted_faults(tiny_registry: Path, tmp_path: Path, fault: str
                                                            ) -> None:  # fmt: skip
    cfg = msgspec.structs.replace(MemedConfig(), signals=msgspec.structs.replace(MemedConfig().signals,
                                                                                 models=MODELS))  # fmt: skip
    market = gappy()
    log = tmp_path / "log"
    middle = serve(market, tiny_registry, log, fault)
    frame = read_log(log)
    assert frame.filter(pl.col("kind") == "served").height == market.height - (fault == "late")
    report = check_parity(log, tiny_registry, cfg)
    assert report.rows == market.height - (fault == "late")
    assert report.tokens == 6
    if not fault:
        assert report.ok, report
        assert report.causes == {}
        return
    assert not report.ok
    # every mismatch comes after the fault, and is put down to it
    assert all(e["minute"] >= middle for e in report.examples)
    want = {"late": "late_tick", "restart": "restart"}[fault]
    assert report.causes == {want: report.mismatched_rows}
    assert report.features  # the features themselves differ, not only the probabilities
    if fault == "late":
        assert report.late_bars == 1
        bars = market.sort("ts", "token")
        dropped = bars["token"][int(np.searchsorted(epoch_minutes(bars["ts"]), middle))]
        assert {e["token"] for e in report.examples} == {dropped}  # only the token that missed its bar


def test_the_log_keeps_every_bar_of_a_hash_sampled_share(tiny_registry: Path, tmp_path: Path) -> None:
    market = gappy(seed=8)
    serve(market, tiny_registry, tmp_path / "log", share=0.5)
    frame = read_log(tmp_path / "log")
    kept = set(frame["token"].unique().to_list())
    assert 0 < len(kept) < 6
    assert frame.height == market.filter(pl.col("token").is_in(list(kept))).height  # every bar of theirs
    hours = {p.name.split("-")[1] for p in (tmp_path / "log").glob("served-*.parquet")}
    assert len(hours) >= 8  # rolled by hour: 500 minutes span nine clock hours
    # a learner that learns from every token cannot be recomputed from a share: features only, and said
    on = MemedConfig().signals
    on = msgspec.structs.replace(on, models=MODELS, online=msgspec.structs.replace(on.online, enabled=True))
    partial = check_parity(
        tmp_path / "log", tiny_registry, msgspec.structs.replace(MemedConfig(), signals=on)
    )
    assert partial.not_compared.startswith("probabilities")
    assert partial.ok
    # and the CLI: exit 0 and "ok" on the clean log; exit 1 naming the cause on a faulted one
    conf = tmp_path / "models.toml"
    conf.write_text(f"[signals]\nmodels = {list(MODELS)}\n".replace("'", '"'))
    ok = CliRunner().invoke(cli, ["check", "parity", str(tmp_path / "log"), "--registry", str(tiny_registry),
                                  "--config", str(conf)])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "ok: every served feature and probability equals" in ok.output
    serve(market, tiny_registry, tmp_path / "bad", fault="restart")
    bad = CliRunner().invoke(cli, ["check", "parity", str(tmp_path / "bad"), "--registry", str(tiny_registry),
                                   "--config", str(conf)])  # fmt: skip
    assert bad.exit_code == 2, bad.output
    assert "cause restart" in bad.output
    assert "parity check failed" in bad.output
    missing = CliRunner().invoke(cli, ["check", "parity", str(tmp_path), "--registry", str(tiny_registry)])
    assert missing.exit_code != 0
    assert "no served-*.parquet files" in missing.output
