"""``memed backtest``."""

from __future__ import annotations

from pathlib import Path

import click

from memed.cli.common import config_option, data_option, selection_options, setup


@click.command("backtest")
@data_option
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option(
    "--models",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Replay this fixed model set (REGISTRY/ID or a registry's latest) instead of retraining.",
)
@click.option(
    "--allow-in-sample",
    is_flag=True,
    help="Replay a --models set even where its training data overlaps a test window (in-sample figures).",
)
@selection_options
@config_option
def backtest_cmd(
    sources: tuple[Path, ...], out: Path, models: Path | None, allow_in_sample: bool, config_path: Path | None
) -> None:
    """Walk-forward backtest: train per fold, replay the test period through the daemon's decision path,
    simulate fills with fees and slippage, and report beside baselines (metrics.json, report.html)."""
    from memed.backtest.run import run_backtest  # noqa: PLC0415
    from memed.cli.progress import RichSink, progress_bar  # noqa: PLC0415

    cfg = setup(config_path)
    with progress_bar("backtest") as progress:
        metrics = run_backtest(
            sources, cfg, out, models=models, allow_in_sample=allow_in_sample, progress=RichSink(progress)
        )
    t = metrics["trading"]
    click.echo(f"wrote {out}/report.html, metrics.json, signals/trades/equity.parquet")
    click.echo(f"{'strategy':<14}{'return':>10}{'sharpe':>9}{'max dd':>9}{'trades':>8}")
    for name, m in t.items():
        click.echo(
            f"{name:<14}{m['total_return']:>10.2%}{m['sharpe']:>9.2f}{m['max_drawdown']:>9.2%}{int(m['trades']):>8}"
        )
    for w in metrics["warnings"]:
        click.secho(f"warning: {w}", fg="yellow")
