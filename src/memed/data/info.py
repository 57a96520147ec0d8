"""Summaries of a dataset for ``memed data info``."""

from __future__ import annotations

import polars as pl

from memed.data.gaps import GapRule, gap_stats
from memed.data.schema import OPTIONAL_COLUMNS, infer_interval_minutes


def dataset_info(frame: pl.DataFrame, gap_fill_max_minutes: int) -> dict[str, str]:
    """Tokens, rows, interval, time range, optional columns present and gap counts."""
    if frame.is_empty():
        return {"tokens": "0", "rows": "0"}
    interval = infer_interval_minutes(frame)
    rule = GapRule(interval, gap_fill_max_minutes)
    gaps = gap_stats(frame, rule).select(pl.exclude("token").sum()).row(0, named=True)
    present = [c for c in OPTIONAL_COLUMNS if frame[c].null_count() < frame.height]
    return {
        "tokens": f"{frame['token'].n_unique():,}",
        "rows": f"{frame.height:,}",
        "interval": f"{interval} min",
        "start": str(frame["ts"].min()),
        "end": str(frame["ts"].max()),
        "optional": ", ".join(present) or "none",
        "gaps": f"{gaps['gaps']:,} ({gaps['missing_bars']:,} missing bars)",
        "filled gaps": f"{gaps['filled_gaps']:,} (<= {gap_fill_max_minutes} min)",
        "restarts": f"{gaps['restarts']:,}",
    }
