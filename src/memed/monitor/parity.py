"""The offline parity check of a served-feature log (``memed check parity LOG``): the logged bars are
replayed through the batch drivers — batch features (:func:`~memed.features.batch.compute_features`) and
the history driver (:meth:`~memed.decision.DecisionPath.process_history`) with the model set that served
each row — and every served feature and probability is compared, bit for bit (NaN equals NaN).

The offline bars are what a batch pipeline over the raw feed would have: every served bar, plus a late
tick's bar for a minute the token had no served bar in (for a minute that had one, a loader keeps the
first bar, the served one). A mismatching row is put down to the most recent of these events for its
token at or before its minute, else ``unexplained`` (the target is zero mismatches of any cause):

``late_tick``
    a late tick the daemon refused that the offline bars hold;
``restart``
    the daemon process changed (a restart whose checkpoint did not carry the token's state);
``model_swap``
    another model set served the token before (sequence models restart their state on a swap);
``gap_fill``
    a gap in the token's bars (filled by the features up to ``gap_fill_max_minutes``, else restarted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from memed.config import MemedConfig
from memed.data.bars import BAR_FIELDS
from memed.decision.path import DecisionPath
from memed.features.batch import compute_features
from memed.models.registry import load_model_set
from memed.monitor.served_log import KIND_LATE, KIND_SERVED, feature_column, read_log

CAUSES = ("late_tick", "restart", "model_swap", "gap_fill", "unexplained")


@dataclass
class ParityReport:
    rows: int = 0
    """Served rows compared."""
    tokens: int = 0
    late_bars: int = 0
    """Late ticks' bars the offline replay holds that the daemon never served."""
    mismatched_rows: int = 0
    features: dict[str, int] = field(default_factory=dict)
    """Mismatching rows per feature (only features with any)."""
    probabilities: dict[str, int] = field(default_factory=dict)
    """Mismatching rows per horizon's ``p_up`` (only horizons with any)."""
    causes: dict[str, int] = field(default_factory=dict)
    """Mismatching rows per cause (:data:`CAUSES`)."""
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    model_sets: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    """The first mismatching rows: token, minute, cause."""
    not_compared: str = ""
    """What could not be compared, and why ('' when everything was)."""

    @property
    def ok(self) -> bool:
        return self.mismatched_rows == 0


def check_parity(log: Path, registry: Path, cfg: MemedConfig, examples: int = 10) -> ParityReport:
    frame = read_log(log)
    served = frame.filter(pl.col("kind") == KIND_SERVED).unique(["token", "minute"], keep="last")
    served = served.sort("token", "minute")
    late = frame.filter(pl.col("kind") == KIND_LATE).join(served.select("token", "minute"),
                                                           on=["token", "minute"], how="anti")  # fmt: skip
    late = late.unique(["token", "minute"], keep="first", maintain_order=True)
    report = ParityReport(rows=served.height, tokens=served["token"].n_unique(), late_bars=late.height)
    if served.is_empty():
        return report
    offline = _bars(pl.concat([served.select("token", "minute", *BAR_FIELDS),
                               late.select("token", "minute", *BAR_FIELDS)]))  # fmt: skip
    events = _events(served, late)
    if (
        cfg.signals.online.enabled
        and "log_share" in served.columns
        and bool((served["log_share"] < 1.0).any())
    ):
        report.not_compared = ("probabilities: the online learner learned from every token's labels and "
                               "the log holds a share of the tokens (monitor.log_share < 1)")  # fmt: skip
    mismatched = np.zeros(served.height, dtype=np.bool_)
    report.model_sets = sorted(served["model_set"].unique().to_list())
    for set_id in report.model_sets:
        ms = load_model_set(registry / set_id)
        path = DecisionPath(ms, cfg.signals, cfg.risk)
        rows = served.with_row_index("_i").filter(pl.col("model_set") == set_id)
        want = _recompute(path, offline, ms.manifest.gap_fill_max_minutes)
        got = rows.join(want, on=["token", "minute"], how="left", suffix="_off")
        idx = got["_i"].to_numpy()
        names = [feature_column(f) for f in ms.manifest.feature_names]
        if not report.not_compared:
            names += [f"p_{h}" for h in ms.manifest.horizons]
        for name in names:
            live = got[name].fill_nan(None).to_numpy().astype(np.float64)
            off = got[f"{name}_off"].fill_nan(None).to_numpy().astype(np.float64)
            diff = ~((live == off) | (np.isnan(live) & np.isnan(off)))
            if not diff.any():
                continue
            key = name[2:] if name.startswith("f_") else name
            (report.features if name.startswith("f_") else report.probabilities)[key] = int(diff.sum())
            gap = np.abs(live - off)[diff]
            finite = gap[np.isfinite(gap)]  # the rest: a value on one side, NaN on the other
            report.max_abs_diff[key] = float(finite.max()) if len(finite) else float("nan")
            mismatched[idx[diff]] = True
    report.mismatched_rows = int(mismatched.sum())
    bad = served.with_columns(pl.Series("_bad", mismatched)).filter("_bad")
    causes = _attribute(served, mismatched, events)
    report.causes = {c: n for c in CAUSES if (n := causes.count(c))}
    for (token, minute), cause in list(zip(bad.select("token", "minute").iter_rows(), causes, strict=True))[
        :examples
    ]:
        report.examples.append({"token": token, "minute": minute, "cause": cause})
    return report


def _bars(rows: pl.DataFrame) -> pl.DataFrame:
    """Logged rows as a canonical bar frame."""
    ts = (
        pl.from_epoch(pl.col("minute") * 60, time_unit="s")
        .dt.replace_time_zone("UTC")
        .dt.cast_time_unit("us")
    )
    return rows.select(pl.col("token"), ts.alias("ts"), *BAR_FIELDS).sort("token", "ts")


def _recompute(path: DecisionPath, bars: pl.DataFrame, gap_fill_max: int) -> pl.DataFrame:
    """Batch features and the history driver's ``p_up`` of every offline bar, by (token, minute)."""
    feats = compute_features(bars, path.spec, gap_fill_max_minutes=gap_fill_max)
    dec = path.process_history(bars)
    probs = pl.DataFrame({
        "token": dec.tokens,
        "minute": dec.ts_minutes.astype(np.int64),
        **{f"p_{h}": dec.horizon_p[:, k] for k, h in enumerate(dec.horizons)},
    })  # fmt: skip
    feats = feats.select(
        "token",
        (pl.col("ts").dt.epoch("s") // 60).alias("minute"),
        *[pl.col(f).alias(feature_column(f)) for f in path.spec.names],
    )
    return feats.join(probs, on=["token", "minute"], how="left")


def _events(served: pl.DataFrame, late: pl.DataFrame) -> pl.DataFrame:
    """Per token, the minutes something happened that offline replay cannot see (sorted)."""
    by_token = served.sort("token", "minute").with_columns(
        prev_run=pl.col("run").shift(1).over("token"),
        prev_set=pl.col("model_set").shift(1).over("token"),
    )
    # gaps in the offline bars (a late tick's bar fills a gap in the served ones)
    bars = pl.concat([served.select("token", "minute"), late.select("token", "minute")]).sort(
        "token", "minute"
    )
    bars = bars.with_columns(step=pl.col("minute") - pl.col("minute").shift(1).over("token"))
    steps = bars["step"].drop_nulls().to_numpy()
    interval = int(np.median(steps)) if len(steps) else 1

    def changed(col: str, prev: str) -> pl.Expr:
        return pl.col(prev).is_not_null() & (pl.col(col) != pl.col(prev))

    parts = [
        late.select("token", "minute", pl.lit(0).alias("rank")),
        by_token.filter(changed("run", "prev_run")).select("token", "minute", pl.lit(1).alias("rank")),
        by_token.filter(changed("model_set", "prev_set")).select("token", "minute", pl.lit(2).alias("rank")),
        bars.filter(pl.col("step") > interval).select("token", "minute", pl.lit(3).alias("rank")),
    ]
    return pl.concat(parts).sort("token", "minute", "rank")


def _attribute(served: pl.DataFrame, bad: np.ndarray, events: pl.DataFrame) -> list[str]:
    """The cause of each mismatching row of ``served`` (sorted by token, minute). Once a token's features
    part from the offline ones they stay apart for as long as their memory lasts, so a run of
    mismatching rows has one cause: that of its first row, the first-ranked event since the token's
    last matching row (else the latest event before it; else ``unexplained``)."""
    if not bad.any():
        return []
    rows = (
        served.select("token", "minute")
        .with_columns(pl.Series("_bad", bad))
        .with_columns(
            prev_minute=pl.col("minute").shift(1).over("token"),
            prev_bad=pl.col("_bad").shift(1).over("token").fill_null(False),
        )
    )
    starts = rows.with_row_index("_i").filter(pl.col("_bad") & ~pl.col("prev_bad"))
    since = (
        starts.join(events, on="token", how="inner", suffix="_ev")
        .filter((pl.col("minute_ev") <= pl.col("minute"))
                & (pl.col("prev_minute").is_null() | (pl.col("minute_ev") > pl.col("prev_minute"))))
        .group_by("_i")
        .agg(pl.col("rank").min())
    )  # fmt: skip
    before = starts.sort("minute").join_asof(
        events.sort("minute"), on="minute", by="token", strategy="backward", check_sortedness=False
    )
    before = before.select("_i", pl.col("rank").alias("_before"))
    ranked = starts.join(since, on="_i", how="left").join(before, on="_i", how="left")
    cause = {i: CAUSES[r if r is not None else b] if (r is not None or b is not None) else "unexplained"
             for i, r, b in ranked.select("_i", "rank", "_before").iter_rows()}  # fmt: skip
    out, current = [], "unexplained"
    for i, is_bad in enumerate(bad.tolist()):
        if is_bad:
            current = cause.get(i, current)
            out.append(current)
    return out
