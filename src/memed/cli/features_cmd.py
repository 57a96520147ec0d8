"""``memed features``: the feature specification and feature computation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import click
import polars as pl

from memed.cli.common import config_option, setup
from memed.cli.progress import progress_bar
from memed.data import infer_interval_minutes, load_dataset, write_dataset
from memed.data.groups import file_groups, parquet_groups
from memed.data.loaders import validate_file_frame
from memed.data.schema import Rejections
from memed.data.select import Selection
from memed.features import build_spec, stream_features
from memed.features.export import GROUP_ROWS, export_features


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
    help="batch: compiled loop over histories, token groups streamed to the file; stream: minute by "
    "minute, exactly as the daemon (whole dataset in memory).",
)
@click.option("--float32", is_flag=True, help="Write the features as float32 (half the file; batch mode).")
@click.option("--group-rows", type=click.IntRange(1000), default=GROUP_ROWS, show_default=True,
              help="Bars per token group in batch mode (a few groups are in memory at most).")  # fmt: skip
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Kernel threads in batch mode (a group in pieces at once)  [default: CPUs]")  # fmt: skip
@config_option
def compute_cmd(dataset: Path, out: Path, mode: str, float32: bool, group_rows: int, threads: int | None,
                config_path: Path | None) -> None:  # fmt: skip
    """Compute every feature of DATASET and write token, ts and the features to OUT.

    In batch mode DATASET is read a token group at a time and the features are written as they are
    computed, so memory stays flat whatever its size: a Parquet file through a lazy scan of each group's
    rows; a folder or other files read once for their tokens, then again a group of files at a time."""
    cfg = setup(config_path)
    select = cfg.data.selection()
    if mode == "stream":
        _compute_stream(dataset, out, cfg.data.spec_args(), select)
        return
    if cfg.data.spec_args()[1]:  # market context: cross-sectional features need every token of a minute
        group_rows = 2**62
        click.echo("data.market_context is on: every token in one group (memory grows with the data)")
    rejections = Rejections()
    groups: Iterator[tuple[pl.DataFrame, Rejections]]
    began = time.perf_counter()  # a folder's first pass included in the figure
    if dataset.is_file() and dataset.suffix == ".parquet":
        head = pl.scan_parquet(dataset).head(10_000).collect()
        interval = infer_interval_minutes(validate_file_frame(head, dataset)[0])
        groups = parquet_groups(dataset, select, group_rows, lambda f: validate_file_frame(f, dataset))
        total = int(pl.scan_parquet(dataset).select(pl.len()).collect().item())
    else:
        with progress_bar("reading files") as bar:
            task = bar.task_ids[0]

            def read(done: int, files: int) -> None:
                bar.update(task, completed=done, total=files)

            plan = file_groups([dataset], select, group_rows, read)
        interval, rejections, groups, total = plan.interval, plan.rejections, plan.frames(), sum(plan.rows)
    spec = build_spec(interval, *cfg.data.spec_args())
    with progress_bar("computing features") as bar:
        task = bar.task_ids[0]
        bar.update(task, total=total)
        stats = export_features(groups, spec, out, float32=float32, kernel_threads=threads,
                                on_group=lambda rows: bar.update(task, completed=rows))  # fmt: skip
    seconds = time.perf_counter() - began
    click.echo(
        f"wrote {out}: {stats.rows:,} rows x {len(spec.names)} features (batch, {stats.groups} token "
        f"groups{', float32' if float32 else ''}, spec {spec.hash}) in {seconds:.2f}s = "
        f"{stats.rows / max(seconds, 1e-9) / 1e6:.2f} M token-minutes/s"
    )
    rejections.merge(stats.rejections)
    if rejections.total:
        click.echo(f"dropped {rejections.total:,} invalid rows: {rejections.as_dict()}")


def _compute_stream(dataset: Path, out: Path, spec_args: tuple[int, bool], select: Selection) -> None:
    """``--mode stream``: the daemon's minute driver over the whole dataset."""
    bars, rejections = load_dataset([dataset], select)
    spec = build_spec(infer_interval_minutes(bars), *spec_args)
    start = time.perf_counter()
    with progress_bar("streaming minutes") as bar:
        task = bar.task_ids[0]
        feats = stream_features(bars, spec, lambda done, total: bar.update(task, completed=done, total=total))
    elapsed = time.perf_counter() - start
    write_dataset(feats, out)
    click.echo(
        f"wrote {out}: {feats.height:,} rows x {len(spec.names)} features (stream, spec {spec.hash}) "
        f"in {elapsed:.2f}s = {feats.height / max(elapsed, 1e-9) / 1e6:.2f} M token-minutes/s"
    )
    if rejections.total:
        click.echo(f"dropped {rejections.total:,} invalid rows: {rejections.as_dict()}")
