"""The ``memed`` command line: one entry point, command groups per job."""

from memed.cli.main import main

__all__ = ["main"]
