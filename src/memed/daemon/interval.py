"""The feed's bar interval against the model set's: a 1-minute set fed hourly bars would sit in
``warming_up`` forever (every bar a gap), a 5-minute set fed 1-minute bars would compute every window
five times too short. After the first :data:`STEPS_NEEDED` steps between a token's consecutive bars, a
feed in which almost none is the set's interval, and whose most common step is another, ends the daemon
(:class:`FeedIntervalError`, exit 2) with one line naming both. A sparse feed of the right interval
(silent minutes skipped) still has the interval as a common step and passes."""

from __future__ import annotations

from collections import Counter

import numpy as np

from memed.errors import MemedError

STEPS_NEEDED = 100
EXACT_SHARE = 0.05
"""Below this share of steps equal to the set's interval (and another step the most common), the feed
is on another interval."""


class FeedIntervalError(MemedError):
    pass


class FeedIntervalCheck:
    def __init__(self, interval_minutes: int, model_set: str) -> None:
        self.interval = interval_minutes
        self.model_set = model_set
        self.steps: Counter[int] = Counter()
        self.done = False

    def observe(self, minute: int, last: np.ndarray) -> None:
        """``last``: each of the minute's tokens' previous bar (epoch minutes, NaN for a new token)."""
        if self.done:
            return
        prev = last[~np.isnan(last)]
        values, counts = np.unique((minute - prev).astype(np.int64), return_counts=True)
        self.steps.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
        total = sum(n for s, n in self.steps.items() if s > 0)
        if total < STEPS_NEEDED:
            return
        self.done = True
        mode = max((s for s in self.steps if s > 0), key=lambda s: self.steps[s])
        if mode != self.interval and self.steps[self.interval] < EXACT_SHARE * total:
            raise FeedIntervalError(
                f"the feed's bars are {mode} minute(s) apart (the most common step of {total:,}); model set "
                f"{self.model_set} is for {self.interval}-minute bars: serve a set trained on {mode}-minute "
                "bars, or feed this one its own interval"
            )
