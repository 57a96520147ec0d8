"""Root command group; anticipated errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from typing import Any

import click

from memed import __version__
from memed.cli.backtest_cmd import backtest_cmd
from memed.cli.check_cmd import check_group
from memed.cli.config_cmd import config_group
from memed.cli.data_cmd import data_group
from memed.cli.features_cmd import features_group
from memed.cli.feed_cmd import feed_cmd
from memed.cli.nats_cmd import nats_group
from memed.cli.run_cmd import demo_cmd, replay_cmd, run_cmd
from memed.cli.train_cmd import models_group, train_cmd
from memed.cli.tune_cmd import tune_cmd
from memed.errors import MemedError


class _MemedGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MemedError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_MemedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="memed")
def cli() -> None:
    """memed: per-minute memecoin ticks in, risk-sized BUY/HOLD/SELL signals out.

    \b
    One feature engine serves the live daemon, the trainers and the backtester.
    Configuration is TOML (see configs/default.toml); every command that takes
    --config validates it once and refuses unknown keys or bad values.
    """


cli.add_command(config_group)
cli.add_command(data_group)
cli.add_command(features_group)
cli.add_command(train_cmd)
cli.add_command(tune_cmd)
cli.add_command(models_group)
cli.add_command(check_group)
cli.add_command(run_cmd)
cli.add_command(nats_group)
cli.add_command(replay_cmd)
cli.add_command(feed_cmd)
cli.add_command(demo_cmd)
cli.add_command(backtest_cmd)


def main() -> None:
    cli(prog_name="memed")
