"""Where a running daemon is: ``kill -USR1 <pid>`` logs every asyncio task's and every thread's stack.

A daemon that does not stop, or stops serving, is diagnosed without a debugger: the event loop's signal
handler writes one ``stacks`` log event (a task's awaited coroutine chain shows where it waits; a
thread's frames show what it computes). A loop blocked by a thread that holds it cannot run the handler;
``py-spy dump --pid`` covers that case.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback

from memed.logs import get_logger

log = get_logger("memed.daemon")


def _coroutine_chain(task: asyncio.Task[object]) -> list[str]:
    """A task's suspended coroutines, outermost first (``Task.get_stack`` shows only the outer frame)."""
    lines: list[str] = []
    coro: object = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return lines


def stacks() -> str:
    """Every task of the running loop and every thread, as text."""
    out: list[str] = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        out.append(f"task {task.get_name()}:")
        out += _coroutine_chain(task)
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.append(f"thread {names.get(ident, ident)}:")
        out += [line.rstrip() for line in traceback.format_stack(frame)]
    return "\n".join(out)


def log_stacks() -> None:
    log.warning("stacks", stacks=stacks())
