"""How long work reports progress, without the trainers knowing about terminals.

The CLI passes a rich-backed sink (``memed.cli.progress.RichSink``); tests and libraries pass nothing.
"""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def start(self, key: str, description: str, total: int) -> None: ...

    def advance(self, key: str, steps: int = 1, description: str | None = None) -> None: ...

    def finish(self, key: str) -> None: ...


class NullProgress:
    def start(self, key: str, description: str, total: int) -> None:
        pass

    def advance(self, key: str, steps: int = 1, description: str | None = None) -> None:
        pass

    def finish(self, key: str) -> None:
        pass
