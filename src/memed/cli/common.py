"""Options and helpers shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from memed.config import MemedConfig, load_config
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


def setup(config_path: Path | None) -> MemedConfig:
    """Load and validate the configuration once, then configure logging from it."""
    cfg = load_config(config_path)
    configure_logging(cfg.logging.level, cfg.logging.format)
    return cfg
