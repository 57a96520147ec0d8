"""``memed run`` (the daemon) and ``memed replay`` (a dataset onto MQTT)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import click

from memed.cli.common import config_option, selection_options, setup


@click.command("run")
@config_option
@click.option("--registry", type=click.Path(path_type=Path), default=None,
              help="Override daemon.registry (a registry folder or one model-set folder).")  # fmt: skip
@click.option("--broker", default=None, help="Override daemon.broker_url, e.g. mqtt://127.0.0.1:1883.")
@click.option("--source", type=click.Choice(["mqtt", "nats"]), default="mqtt", show_default=True,
              help="mqtt: one daemon reads the MQTT feed; nats: one of several daemons sharing a JetStream "
                   "stream by partition ([nats] in the config; pip install 'memed[scale]').")  # fmt: skip
@click.option("--nats-url", default=None, help="Override nats.url, e.g. nats://127.0.0.1:4222.")
def run_cmd(
    config_path: Path | None, registry: Path | None, broker: str | None, source: str, nats_url: str | None
) -> None:
    """Serve signals: subscribe to the tick feed, publish risk-sized signals, until SIGTERM/SIGINT.

    On SIGTERM or SIGINT the daemon drains the current batch, publishes it and writes its checkpoint
    (with --source nats: snapshots its partitions and hands them to the other daemons).
    """
    early: list[int] = []  # a SIGTERM/SIGINT during start-up (loading models, replaying the journal)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    import msgspec  # noqa: PLC0415

    from memed.daemon.app import Daemon  # noqa: PLC0415

    cfg = setup(config_path)
    changes = {}
    if registry is not None:
        changes["registry"] = str(registry)
    if broker is not None:
        changes["broker_url"] = broker
    if changes:
        cfg = msgspec.structs.replace(cfg, daemon=msgspec.structs.replace(cfg.daemon, **changes))
    if nats_url is not None:
        cfg = msgspec.structs.replace(cfg, nats=msgspec.structs.replace(cfg.nats, url=nats_url))
    if source == "nats":
        from memed.daemon.nats.app import NatsDaemon  # noqa: PLC0415

        asyncio.run(_serve(NatsDaemon(cfg), early))
    else:
        asyncio.run(_serve(Daemon(cfg), early))


async def _serve(daemon: Any, early: list[int]) -> None:
    """Run until SIGTERM/SIGINT; one received during start-up stops the daemon as soon as it runs (it
    then writes its checkpoint like any stop). SIGUSR1 logs every task's and thread's stack."""
    from memed.daemon.stacks import log_stacks  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
    loop.add_signal_handler(signal.SIGUSR1, log_stacks)
    if early:
        daemon.stop()
    await daemon.run()


@click.command("replay")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--broker", required=True, help="mqtt://host:port")
@click.option("--speed", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Times real time (0: as fast as the broker takes it).")  # fmt: skip
@click.option("--batch", is_flag=True, help="One JSON array per minute instead of one message per tick.")
@click.option("--topic-prefix", default="memed/ticks", show_default=True)
@click.option("--username", default=None)
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A file holding the password (or set MEMED_MQTT_PASSWORD; never on the command line, "
                   "where other users see it).")  # fmt: skip
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CA certificate for an mqtts:// broker.")  # fmt: skip
@selection_options
@config_option
def replay_cmd(sources: tuple[Path, ...], broker: str, speed: float, batch: bool, topic_prefix: str,
               username: str | None, password_file: Path | None, ca_file: Path | None,
               config_path: Path | None) -> None:  # fmt: skip
    """Publish the ticks of SOURCES onto MQTT minute by minute (QoS 1) to feed a daemon."""
    import os  # noqa: PLC0415

    password = (password_file.read_text(encoding="utf-8").strip() if password_file is not None
                else os.environ.get("MEMED_MQTT_PASSWORD"))  # fmt: skip
    from memed.cli.progress import progress_bar  # noqa: PLC0415
    from memed.daemon.publish_dataset import publish_dataset  # noqa: PLC0415
    from memed.data import load_dataset  # noqa: PLC0415

    cfg = setup(config_path)
    frame, _ = load_dataset(sources, cfg.data.selection())
    with progress_bar("replaying minutes") as progress:
        task = progress.tasks[0].id

        def on_minute(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        ca = str(ca_file) if ca_file is not None else None
        publish = publish_dataset(
            frame, broker, prefix=topic_prefix, batch=batch, speed=speed, username=username,
            password=password, ca_file=ca, on_minute=on_minute,
        )  # fmt: skip
        stats = asyncio.run(publish)
    click.echo(f"published {int(stats['messages']):,} messages for {int(stats['minutes']):,} minutes "
               f"in {stats['seconds']:.1f} s ({int(stats['reconnects'])} reconnects)")  # fmt: skip


@click.command("demo")
@click.option("--minutes", type=click.IntRange(10), default=1440, show_default=True,
              help="How many of the dataset's last minutes to replay.")  # fmt: skip
@click.option("--speed", type=click.FloatRange(0), default=1200.0, show_default=True,
              help="Times real time (1200: a minute every 50 ms; 0: as fast as possible).")  # fmt: skip
@click.option(
    "--data-root", type=click.Path(path_type=Path), default=Path("../shared/data"), show_default=True
)
@config_option
def demo_cmd(minutes: int, speed: float, data_root: Path, config_path: Path | None) -> None:
    """Everything on embedded defaults, no external service: an embedded MQTT broker, the packaged model
    set, a real dataset replayed at high speed, the daemon, and a live table of the latest signals."""
    from rich.console import Console  # noqa: PLC0415

    from memed.daemon.demo import demo_market, run_demo  # noqa: PLC0415
    from memed.logs import configure_logging  # noqa: PLC0415

    cfg = setup(config_path)
    configure_logging("warning", cfg.logging.format)  # the live table is the demo's output
    market, source = demo_market(data_root, minutes)
    console = Console()
    console.print(f"replaying {market.height:,} ticks from {source}")
    try:
        daemon = asyncio.run(run_demo(cfg, market, speed=speed, console=console))
    except KeyboardInterrupt:
        console.print("interrupted")
        return
    counts = {k: int(v) for k, v in sorted(daemon.metrics.signal_counts().items())}
    console.print(f"served {daemon.processed_minutes:,} minutes; signals by action: {counts}")
