"""Progress bars for long work (rich), quiet when stderr is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str) -> Iterator[Progress]:
    """A rich progress bar on stderr; disabled (no output) when stderr is not a terminal."""
    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    ) as progress:
        progress.add_task(description, total=None)
        yield progress


class RichSink:
    """A :class:`memed.trainers.progress.ProgressSink` drawing one rich bar per task on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def start(self, key: str, description: str, total: int) -> None:
        self._tasks[key] = self._progress.add_task(description, total=total)

    def advance(self, key: str, steps: int = 1, description: str | None = None) -> None:
        task = self._tasks.get(key)
        if task is not None:
            self._progress.update(task, advance=steps, description=description)

    def finish(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            self._progress.remove_task(task)
