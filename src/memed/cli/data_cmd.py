"""``memed data``: import, inspect and synthesise market data."""

from __future__ import annotations

from pathlib import Path

import click

from memed.cli.common import config_option, selection_options, setup
from memed.data import dataset_info, load_dataset, random_walk_market, synth_market, write_dataset


@click.group("data")
def data_group() -> None:
    """Import, inspect and synthesise market data."""


@data_group.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .parquet")
@selection_options
@config_option
def import_(sources: tuple[Path, ...], out: Path, config_path: Path | None) -> None:
    """Read SOURCES (files or folders, searched recursively: parquet, csv, freqtrade feather/parquet/json/
    jsongz, GeckoTerminal csv) into one canonical dataset, sorted by token and time. Rows that break the
    schema are dropped and reported; freqtrade mark, index, premium-index and funding-rate files are
    skipped and counted; files of different bar intervals are refused unless --timeframe picks one."""
    cfg = setup(config_path)
    frame, rejections = load_dataset(sources, cfg.data.selection())
    write_dataset(frame, out)
    click.echo(f"wrote {out}: {frame.height:,} rows, {frame['token'].n_unique():,} tokens")
    if rejections.total:
        click.echo(f"dropped {rejections.total:,} rows:")
        for reason, n in rejections.as_dict().items():
            click.echo(f"  {reason:<22}{n:>10,}")
    else:
        click.echo("dropped 0 rows")
    if rejections.skipped:
        click.echo(f"skipped {sum(rejections.skipped.values()):,} files:")
        for reason, n in sorted(rejections.skipped.items()):
            click.echo(f"  {reason:<22}{n:>10,}")


@data_group.command("info")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
def info(dataset: Path, config_path: Path | None) -> None:
    """Print tokens, rows, interval, time range and gap counts of DATASET."""
    cfg = setup(config_path)
    frame, rejections = load_dataset([dataset], cfg.data.selection())
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
@click.option("--random-walk", is_flag=True,
              help="Driftless random walks, no predictability at all (to check nothing trades).")  # fmt: skip
def synth(tokens: int, minutes: int, seed: int, out: Path, random_walk: bool) -> None:
    """Write a reproducible synthetic memecoin market (for tests and the demo)."""
    frame = random_walk_market(tokens, minutes, seed) if random_walk else synth_market(tokens, minutes, seed)
    write_dataset(frame, out)
    kind = "random walks" if random_walk else "memecoin lifecycles"
    click.echo(f"wrote {out}: {frame.height:,} rows, {tokens:,} tokens ({kind}), seed {seed}")


@data_group.command("categorize")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--all-tokens", is_flag=True, help="Print every token, not only the summary.")
@config_option
def categorize_cmd(sources: tuple[Path, ...], all_tokens: bool, config_path: Path | None) -> None:
    """Put every token of SOURCES in one category (gaps > normal > extremes > dead) and print the table."""
    import polars as pl  # noqa: PLC0415

    from memed.data.cleaning import categorize  # noqa: PLC0415
    from memed.data.gaps import GapRule  # noqa: PLC0415
    from memed.data.schema import infer_interval_minutes  # noqa: PLC0415
    from memed.trainers.dataset import cleaning_rule  # noqa: PLC0415

    cfg = setup(config_path)
    frame, _ = load_dataset(sources, cfg.data.selection())
    interval = infer_interval_minutes(frame)
    table = categorize(frame, cleaning_rule(cfg), GapRule(interval, cfg.data.gap_fill_max_minutes))
    summary = (
        table.group_by("category")
        .agg(pl.len().alias("tokens"), pl.col("bars").sum().alias("bars"))
        .sort("category")
    )
    click.echo(f"{'category':<10}{'tokens':>8}{'bars':>12}")
    for cat, n, bars in summary.iter_rows():
        click.echo(f"{cat:<10}{n:>8,}{bars:>12,}")
    if all_tokens:
        click.echo(f"\n{'token':<48}{'category':<10}{'bars':>8}{'missing':>9}{'max|lr|':>9}{'tail_min':>9}")
        for tok, cat, bars, miss, mx, tail in table.iter_rows():
            click.echo(f"{tok:<48}{cat:<10}{bars:>8,}{miss:>9.3f}{mx:>9.3f}{tail:>9,}")
