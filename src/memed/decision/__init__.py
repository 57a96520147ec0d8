"""The decision path: features → models → ensemble → policy → risk, one synchronous object shared by the
daemon and the backtester, shaped like :mod:`memed.features`: a minute driver
(:meth:`DecisionPath.process`) and a history driver (:meth:`DecisionPath.process_history`) calling the
same compiled steps (the books), the same scorer per model kind and the same :class:`Decider`, with one
result container (:class:`Decisions`) and the feature stream's token table."""

from memed.decision.books import Books, advance_book, books_over_history
from memed.decision.decide import Decider
from memed.decision.history import BLOCK_ROWS
from memed.decision.path import DecisionPath
from memed.decision.result import Decisions
from memed.decision.scorers import Scorer, StatefulScorer, TabularScorer, WindowScorer

__all__ = [
    "BLOCK_ROWS",
    "Books",
    "Decider",
    "DecisionPath",
    "Decisions",
    "Scorer",
    "StatefulScorer",
    "TabularScorer",
    "WindowScorer",
    "advance_book",
    "books_over_history",
]
