"""``memed features``: the feature specification and feature computation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from memed.cli.common import config_option, setup
from memed.cli.progress import progress_bar
from memed.data import infer_interval_minutes, load_dataset, write_dataset
from memed.features import build_spec, compute_features, stream_features


@click.group("features")
def features_group() -> None:
    """Inspect the feature specification and compute features."""


@features_group.command("spec")
@click.option(
    "--interval", type=click.IntRange(1), default=1, show_default=True, help="Bar interval in minutes."
)
@click.option("--json", "as_json", is_flag=True, help="Print the full specification as JSON.")
@config_option
def spec_cmd(interval: int, as_json: bool, config_path: Path | None) -> None:
    """Print the feature specification (names, parameters, warm-ups) and its hash."""
    cfg = setup(config_path)
    spec = build_spec(interval, *cfg.data.spec_args())
    if as_json:
        click.echo(json.dumps({"hash": spec.hash, **spec.to_dict()}, indent=2))
        return
    click.echo(
        f"# feature spec {spec.hash}: {len(spec.features)} features, {interval}-minute bars, "
        f"ready after {spec.warmup_bars} bars, gaps filled up to {spec.gap_fill_max_minutes} min"
    )
    for f in spec.features:
        params = ", ".join(f"{k}={v}" for k, v in f.params.items())
        flag = "  (where the data has it)" if f.optional else ""
        click.echo(f"{f.name:<24} warmup {f.warmup:>3}  {params}{flag}")


@features_group.command("compute")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .parquet")
@click.option(
    "--mode",
    type=click.Choice(["batch", "stream"]),
    default="batch",
    show_default=True,
    help="batch: compiled loop over histories; stream: minute by minute, exactly as the daemon.",
)
@config_option
def compute_cmd(dataset: Path, out: Path, mode: str, config_path: Path | None) -> None:
    """Compute every feature of DATASET and write token, ts and the features to OUT."""
    cfg = setup(config_path)
    bars, rejections = load_dataset([dataset], cfg.data.selection())
    spec = build_spec(infer_interval_minutes(bars), *cfg.data.spec_args())
    start = time.perf_counter()
    if mode == "batch":
        feats = compute_features(bars, spec)
    else:
        with progress_bar("streaming minutes") as bar:
            task = bar.task_ids[0]
            feats = stream_features(
                bars, spec, lambda done, total: bar.update(task, completed=done, total=total)
            )
    elapsed = time.perf_counter() - start
    write_dataset(feats, out)
    click.echo(
        f"wrote {out}: {feats.height:,} rows x {len(spec.names)} features ({mode}, spec {spec.hash}) "
        f"in {elapsed:.2f}s = {feats.height / max(elapsed, 1e-9) / 1e6:.2f} M token-minutes/s"
    )
    if rejections.total:
        click.echo(f"dropped {rejections.total:,} invalid rows: {rejections.as_dict()}")
