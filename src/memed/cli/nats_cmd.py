"""``memed nats``: what a NATS deployment needs from its operator."""

from __future__ import annotations

from pathlib import Path

import click

from memed.cli.common import config_option, setup


@click.group("nats")
def nats_group() -> None:
    """Scale-out on NATS JetStream (memed run --source nats)."""


@nats_group.command("server-config")
@config_option
def server_config_cmd(config_path: Path | None) -> None:
    """Print the subject mapping nats-server needs: <tick_subject>.<token> to a partition subject.

    Put it in the server's configuration (top level, or inside the account the feed and the daemons
    use); the daemons create the streams, consumers and buckets themselves.
    """
    from memed.daemon.nats.layout import server_config  # noqa: PLC0415

    click.echo(server_config(setup(config_path).nats), nl=False)
