"""Market data: the canonical bar schema, loaders, the gap rule and the synthetic market."""

from memed.data.gaps import GapRule, fill_gaps, gap_stats
from memed.data.info import dataset_info
from memed.data.loaders import load_dataset, read_bars, write_dataset
from memed.data.schema import BAR_COLUMNS, BAR_SCHEMA, Rejections, infer_interval_minutes, validate_bars
from memed.data.synth import synth_market

__all__ = [
    "BAR_COLUMNS",
    "BAR_SCHEMA",
    "GapRule",
    "Rejections",
    "dataset_info",
    "fill_gaps",
    "gap_stats",
    "infer_interval_minutes",
    "load_dataset",
    "read_bars",
    "synth_market",
    "validate_bars",
    "write_dataset",
]
