"""Options and helpers shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from memed.config import MemedConfig, load_config
from memed.errors import ConfigError
from memed.logs import configure_logging

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    """``--config FILE``: the TOML configuration (embedded defaults when omitted)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="TOML configuration file (default: embedded defaults, see configs/default.toml).",
    )(func)


def data_option(func: F) -> F:
    """``--data PATH`` (repeatable): dataset files or folders, bound to ``sources``."""
    return click.option(
        "--data",
        "sources",
        multiple=True,
        required=True,
        type=click.Path(exists=True, path_type=Path),
        help="Dataset file or folder (repeatable).",
    )(func)


_SELECTION = "memed.selection"


def selection_options(func: F) -> F:
    """``--timeframe``, ``--timerange`` and ``--tokens``: the part of the data a command reads; they
    override ``[data]`` of the configuration when :func:`setup` loads it."""

    def keep(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value:
            ctx.meta.setdefault(_SELECTION, {})[str(param.name)] = value

    options = [
        click.option("--timeframe", callback=keep, expose_value=False, default=None,
                     help="Only files of this bar interval (1m, 5m, 1h); needed when a folder mixes them."),
        click.option("--timerange", callback=keep, expose_value=False, default=None,
                     help="freqtrade's YYYYMMDD-YYYYMMDD (either side may be empty; the end is exclusive)."),
        click.option("--tokens", callback=keep, expose_value=False, default=None,
                     help="Comma-separated tokens (freqtrade pairs as in file names, e.g. PEPE_USDT)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def setup(config_path: Path | None) -> MemedConfig:
    """Load and validate the configuration once (with any selection options given), then configure
    logging from it."""
    cfg = load_config(config_path)
    ctx = click.get_current_context(silent=True)
    chosen = ctx.meta.get(_SELECTION, {}) if ctx is not None else {}
    if chosen:
        if "tokens" in chosen:
            chosen["tokens"] = [t.strip() for t in chosen["tokens"].split(",") if t.strip()]
        try:
            data = msgspec.structs.replace(cfg.data, **chosen)  # validated in its __post_init__
        except ValueError as exc:
            raise ConfigError(f"--{next(iter(chosen))}: {exc}" if len(chosen) == 1 else str(exc)) from None
        cfg = msgspec.structs.replace(cfg, data=data)
    configure_logging(cfg.logging.level, cfg.logging.format)
    return cfg
