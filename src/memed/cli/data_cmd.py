"""``memed data``: import, inspect and synthesise market data."""

from __future__ import annotations

from pathlib import Path

import click

from memed.cli.common import config_option, setup
from memed.data import dataset_info, load_dataset, synth_market, write_dataset


@click.group("data")
def data_group() -> None:
    """Import, inspect and synthesise market data."""


@data_group.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .parquet")
@config_option
def import_(sources: tuple[Path, ...], out: Path, config_path: Path | None) -> None:
    """Read SOURCES (files or folders: parquet, csv, freqtrade feather/json, GeckoTerminal csv) into one
    canonical dataset, sorted by token and time. Rows that break the schema are dropped and reported."""
    setup(config_path)
    frame, rejections = load_dataset(sources)
    write_dataset(frame, out)
    click.echo(f"wrote {out}: {frame.height:,} rows, {frame['token'].n_unique():,} tokens")
    if rejections.total:
        click.echo(f"dropped {rejections.total:,} rows:")
        for reason, n in rejections.as_dict().items():
            click.echo(f"  {reason:<22}{n:>10,}")
    else:
        click.echo("dropped 0 rows")


@data_group.command("info")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
def info(dataset: Path, config_path: Path | None) -> None:
    """Print tokens, rows, interval, time range and gap counts of DATASET."""
    cfg = setup(config_path)
    frame, rejections = load_dataset([dataset])
    summary = dataset_info(frame, cfg.data.gap_fill_max_minutes)
    for key, value in summary.items():
        click.echo(f"{key:<16}{value}")
    if rejections.total:
        click.echo(f"{'invalid rows':<16}{rejections.total:,} {rejections.as_dict()}")


@data_group.command("synth")
@click.option("--tokens", type=click.IntRange(1), default=100, show_default=True)
@click.option("--minutes", type=click.IntRange(2), default=1440, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def synth(tokens: int, minutes: int, seed: int, out: Path) -> None:
    """Write a reproducible synthetic memecoin market (for tests and the demo)."""
    frame = synth_market(tokens, minutes, seed)
    write_dataset(frame, out)
    click.echo(f"wrote {out}: {frame.height:,} rows, {tokens:,} tokens, seed {seed}")
