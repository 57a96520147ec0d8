"""Typed, frozen, validated configuration.

The configuration is TOML. It is decoded once (at the CLI) into frozen :mod:`msgspec` structs: an unknown
key, a wrong type or an out-of-range value raises :class:`~memed.errors.ConfigError` with one line naming
the key. Every component receives its own section, never a dict. The config hash (sha256 of the canonical
JSON of the effective configuration, secrets excluded) is stamped into artifacts and start-up logs.

The defaults below are the embedded defaults; ``configs/default.toml`` documents each key and a test
keeps the two equal.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from memed.errors import ConfigError

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: immutable, strict about unknown keys."""


class LoggingConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DataConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    gap_fill_max_minutes: Annotated[int, msgspec.Meta(ge=0, le=1440)] = 15
    """Gaps of up to this many missing minutes are filled with flat zero-volume bars; longer gaps start
    a new segment (the token's feature state restarts)."""


class MemedConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    logging: LoggingConfig = LoggingConfig()
    data: DataConfig = DataConfig()

    def hash(self) -> str:
        """Stable short hash of the effective configuration (sorted canonical JSON, sha256)."""
        return config_hash(self)


def config_hash(cfg: MemedConfig) -> str:
    canonical = msgspec.json.encode(msgspec.to_builtins(cfg), order="sorted")
    return hashlib.sha256(canonical).hexdigest()[:16]


_PATH_RE = re.compile(r" - at `\$\.?([^`]*)`$")


def _translate(err: msgspec.ValidationError, source: str) -> ConfigError:
    """Turn msgspec's message into 'source: key.path: problem'."""
    message = str(err)
    key = "<root>"
    match = _PATH_RE.search(message)
    if match:
        key = match.group(1) or "<root>"
        message = message[: match.start()]
    unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        key = f"{key}.{unknown.group(1)}" if key != "<root>" else unknown.group(1)
        message = "unknown key"
    return ConfigError(f"{source}: {key}: {message}")


def parse_config(text: str, source: str = "<string>") -> MemedConfig:
    """Decode TOML text into a validated :class:`MemedConfig`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return msgspec.convert(raw, MemedConfig)
    except msgspec.ValidationError as exc:
        raise _translate(exc, source) from None


def load_config(path: str | Path | None = None) -> MemedConfig:
    """Load a config file, or the embedded defaults when ``path`` is None."""
    if path is None:
        return MemedConfig()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    return parse_config(text, str(p))


def to_toml(cfg: MemedConfig) -> str:
    """Render the effective configuration as TOML (sections in declaration order)."""
    lines: list[str] = []
    for section, values in msgspec.to_builtins(cfg).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
