"""memed's exception tree.

Every error that a user can cause (bad config, bad data file, incompatible model) derives from
:class:`MemedError`. The CLI translates these into one clear line on stderr and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MemedError(Exception):
    """Base class of every anticipated memed failure."""

    exit_code: int = 2


class ConfigError(MemedError):
    """The configuration file is missing, malformed, or has an invalid key or value."""


class DataError(MemedError):
    """An input data file cannot be read or does not have the expected shape."""


class SpecMismatchError(MemedError):
    """An artifact (model, checkpoint) was made for a different feature specification."""


class SnapshotError(MemedError):
    """A state snapshot cannot be decoded."""


class RegistryError(MemedError):
    """A model set, its manifest or one of its ONNX files is missing, corrupt or inconsistent."""
