"""``memed feed``: a market-data source onto MQTT for ``memed run``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click

from memed.cli.common import config_option, setup
from memed.errors import ConfigError


@click.command("feed")
@click.argument(
    "source", type=click.Choice(["binance", "geckoterminal", "birdeye", "pumpportal", "dexscreener"])
)
@click.option("--broker", required=True, help="mqtt://host:port of the broker memed run reads.")
@click.option("--symbols", default="", help="Comma-separated: binance symbols (1000PEPEUSDT), geckoterminal "
              "network:pool, birdeye addresses, pumpportal mints, dexscreener chain:pair.")  # fmt: skip
@click.option("--base-url", default="", help="The source's address (default: its public API).")
@click.option("--poll-seconds", type=click.FloatRange(0.1), default=20.0, show_default=True,
              help="REST sources: seconds between polls of each symbol (within rate limits).")  # fmt: skip
@click.option("--topic", default="memed/ticks/feed", show_default=True)
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append every frame received to this JSONL file (for --replay).")  # fmt: skip
@click.option("--replay", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Feed a recorded JSONL capture instead of the network, then exit.")  # fmt: skip
@click.option("--username", default=None)
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A file holding the broker password (or MEMED_MQTT_PASSWORD).")  # fmt: skip
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@config_option
def feed_cmd(  # noqa: PLR0913, PLR0917 - one parameter per option
             source: str, broker: str, symbols: str, base_url: str, poll_seconds: float, topic: str,
             record: Path | None, replay: Path | None, username: str | None, password_file: Path | None,
             ca_file: Path | None, config_path: Path | None) -> None:  # fmt: skip
    """Connect to SOURCE (websocket or polled REST, reconnecting with backoff), turn what it sends into
    1-minute ticks and publish them onto MQTT as JSON arrays. Birdeye reads its key from
    MEMED_BIRDEYE_API_KEY."""
    from memed.feeds.client import FeedOptions, api_key_from_env, run_feed  # noqa: PLC0415

    setup(config_path)
    chosen = [s.strip() for s in symbols.split(",") if s.strip()]
    if not chosen and replay is None:
        raise ConfigError("--symbols: name at least one symbol (or --replay a capture)")
    if source in ("geckoterminal", "dexscreener") and any(":" not in s for s in chosen):
        raise ConfigError(f"--symbols: {source} symbols are NETWORK:ADDRESS, e.g. solana:FRhB8L7Y9Q...")
    password = (password_file.read_text(encoding="utf-8").strip() if password_file is not None
                else os.environ.get("MEMED_MQTT_PASSWORD"))  # fmt: skip
    key = api_key_from_env(source)  # type: ignore[arg-type]
    opts = FeedOptions(source, chosen, base_url, poll_seconds, record, key)  # type: ignore[arg-type]
    try:
        ca = str(ca_file) if ca_file else None
        stats = asyncio.run(run_feed(opts, broker, topic=topic, replay=replay, username=username,
                                     password=password, ca_file=ca))  # fmt: skip
    except KeyboardInterrupt:
        return
    click.echo(f"{stats.frames:,} frames, {stats.published:,} ticks published to {topic}"
               + (f", rejected {dict(stats.rejected)}" if stats.rejected else ""))  # fmt: skip
