"""Market data: the canonical bar schema, loaders, the gap rule and the synthetic market."""

from memed.data.bars import BAR_FIELDS, BAR_REASONS, bar_verdicts
from memed.data.frames import bar_matrix, by_token, epoch_minutes, run_bounds, token_starts
from memed.data.gaps import GapRule, fill_gaps, gap_stats
from memed.data.info import dataset_info
from memed.data.loaders import load_dataset, read_bars, write_dataset
from memed.data.schema import BAR_COLUMNS, BAR_SCHEMA, Rejections, infer_interval_minutes, validate_bars
from memed.data.synth import random_walk_market, synth_market

__all__ = [
    "BAR_COLUMNS",
    "BAR_FIELDS",
    "BAR_REASONS",
    "BAR_SCHEMA",
    "GapRule",
    "Rejections",
    "bar_matrix",
    "bar_verdicts",
    "by_token",
    "dataset_info",
    "epoch_minutes",
    "fill_gaps",
    "gap_stats",
    "infer_interval_minutes",
    "load_dataset",
    "random_walk_market",
    "read_bars",
    "run_bounds",
    "synth_market",
    "token_starts",
    "validate_bars",
    "write_dataset",
]
