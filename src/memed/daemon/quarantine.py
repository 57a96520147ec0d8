"""Finding and quarantining the tokens that make a minute raise.

When processing a minute raises, the tokens of that minute may have half-updated state, so all of them
are forgotten (they warm up afresh, as a new token would). The batch is then bisected on that fresh
state: a half that processes cleanly is done (its tokens have taken the minute as their first bar), a
half that raises is forgotten again and split, down to single tokens. A token that raises on its own is
quarantined: its ticks are rejected (``quarantined``) for ``daemon.quarantine_minutes`` of event time,
so one poisonous token cannot reset every other token minute after minute. A fault that is not any one
token's (every token raises alone) or that needs more than :data:`BISECT_BUDGET` failing runs to pin
down quarantines nobody.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from memed.decision import DecisionPath

BISECT_BUDGET = 64
"""Failing runs a bisection may take: one culprit among 50,000 tokens needs about 17."""


@dataclass
class Bisection:
    culprits: list[str]
    """Tokens that raise on their own (empty when the fault is nobody's, or the budget ran out)."""
    runs: int
    exhausted: bool


def bisect_minute(path: DecisionPath, tokens: list[str], minute: float, bars: np.ndarray,
                  budget: int = BISECT_BUDGET) -> Bisection:  # fmt: skip
    """Forget ``tokens`` and bisect the minute over them (see the module's description). Every token
    ends either having processed the minute from fresh state or forgotten."""
    path.forget(tokens)
    culprits: list[str] = []
    failures = 0
    runs = 0
    stack = [np.arange(len(tokens))]
    while stack:
        idx = stack.pop()
        names = [tokens[i] for i in idx.tolist()]
        runs += 1
        try:
            path.process(names, minute, np.ascontiguousarray(bars[:, idx]))
            continue
        except Exception:  # the fault being looked for, whatever it is
            path.forget(names)
            failures += 1
        if failures > budget:  # too many culprits, or nobody's: forget the rest, quarantine none
            for rest in stack:
                path.forget([tokens[i] for i in rest.tolist()])
            return Bisection([], runs, exhausted=True)
        if len(idx) == 1:
            culprits.append(names[0])
        else:
            half = len(idx) // 2
            stack += [idx[half:], idx[:half]]
    if len(culprits) == len(tokens) and len(tokens) > 1:
        culprits = []  # every token raises alone: the fault is the minute's, not a token's
    return Bisection(culprits, runs, exhausted=False)


@dataclass
class Quarantine:
    """Tokens whose ticks are rejected until an event-time minute."""

    minutes: int
    until: dict[str, int] = field(default_factory=dict)

    def add(self, tokens: list[str], minute: int) -> None:
        for t in tokens:
            self.until[t] = minute + self.minutes

    def holds(self, token: str, minute: int) -> bool:
        end = self.until.get(token)
        if end is None:
            return False
        if minute > end:
            del self.until[token]
            return False
        return True
