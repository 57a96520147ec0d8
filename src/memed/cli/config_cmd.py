"""``memed config``: inspect the effective configuration."""

from __future__ import annotations

from pathlib import Path

import click

from memed.cli.common import config_option, setup
from memed.config import to_toml


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_option
def show(config_path: Path | None) -> None:
    """Print the effective configuration (TOML) and its hash."""
    cfg = setup(config_path)
    click.echo(f"# config hash: {cfg.hash()}")
    click.echo(to_toml(cfg), nl=False)
