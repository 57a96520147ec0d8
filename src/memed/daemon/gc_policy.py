"""The daemon's garbage-collector policy: no full collection in the middle of a minute.

CPython's cyclic collector scans every tracked object of a generation when it runs; with the tokens'
state, the latest signals and a minute's ticks alive, a full collection in the middle of a minute at
10,000 tokens took 100 ms (measured when the signals were still built as an object per token: that step
22 ms median, 122 ms max with the collector on; 17 and 18 ms with this policy). So, after start-up and
after every processed minute, what is alive is moved to the permanent generation (``gc.freeze``: O(1));
automatic collections then only scan what one minute made. Nearly everything memed makes is acyclic and
freed by reference counting anyway; the rare cycle frozen alive is collected every
``full_every_minutes`` by a full collection, run right after a minute's signals are out and only when no
later minute has begun to arrive: the collection stalls the event loop (a second in a large process),
and a stall while a minute is half received would let its wait expire and refuse the rest of its ticks
as late. A replay that never pauses defers it.
"""

from __future__ import annotations

import gc
import time

from memed.logs import get_logger

log = get_logger("memed.daemon")


class GcPolicy:
    def __init__(self, enabled: bool, full_every_minutes: int = 60) -> None:
        self.enabled = enabled
        self.full_every = full_every_minutes
        self._minutes = 0

    def started(self) -> None:
        """After start-up (models loaded, state restored, warmed up)."""
        if self.enabled:
            gc.collect()
            gc.freeze()

    def minute_done(self, idle: bool) -> None:
        """After a minute's signals are on their way; ``idle``: no tick of a later minute is waiting."""
        if not self.enabled:
            return
        self._minutes += 1
        if self._minutes >= self.full_every and idle:
            self._minutes = 0
            t0 = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            log.debug("gc_full", unreachable=found, seconds=round(time.perf_counter() - t0, 4))
        else:
            gc.freeze()
