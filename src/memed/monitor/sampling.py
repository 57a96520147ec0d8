"""Which tokens a sampled share covers: a hash of the name, so every process (daemon, backtest, parity
check, a restarted daemon) picks the same tokens, and a token is in or out with all of its bars."""

from __future__ import annotations

import zlib


def sampled(token: str, share: float) -> bool:
    """Whether ``token`` falls in the hash-sampled ``share`` of tokens."""
    return share >= 1.0 or zlib.crc32(token.encode()) < share * 2**32


class Sample:
    """:func:`sampled` with the answers kept (a token's hash is taken once)."""

    def __init__(self, share: float) -> None:
        self.share = share
        self._known: dict[str, bool] = {}

    def __call__(self, token: str) -> bool:
        got = self._known.get(token)
        if got is None:
            got = self._known[token] = sampled(token, self.share)
        return got

    def forget(self, tokens: list[str]) -> None:
        for t in tokens:
            self._known.pop(t, None)
