"""Does the online learner help? On real data, on tokens the fitted set never saw, in weeks after its
training split.

A logistic set is trained on 60 % of the tokens of ``binance-spot-5m-universe`` (chosen by a hash of the
name) over the first ``--train-weeks`` weeks. The other 40 % are then decided minute by minute over the
whole period with the online learner on (``signals.online``, horizon 60), so the learner learns from the
unseen tokens' delayed labels from their first ready bar, as a daemon would. Scored are the later weeks
only, each row's 60-minute label (the trainer's rule, ties excluded): the fitted logistic member alone,
the online member alone, and the ensemble of both (equal weights), beside the training split's up-rate
as a constant (the trivially fitted baseline). Intervals: 95 % day-block bootstrap of the paired
log-loss differences against the fitted member (1,000 resamples).

    python benchmarks/online_learner.py [--data ../shared/data/binance-spot-5m-universe]
        [--start 2024-03-01] [--train-weeks 6] [--eval-weeks 6] [--learning-rate 0.01]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import polars as pl

from memed.backtest.replay import replay_signals_minutewise
from memed.config import MemedConfig, OnlineConfig, parse_config
from memed.data import load_dataset, write_dataset
from memed.decision import DecisionPath
from memed.models.registry import load_model_set
from memed.trainers.labels import add_labels, label_col
from memed.trainers.run import train_model_set

H = 60
TRAIN_TENTHS = 6
"""Tokens whose name hashes to 0..5 of 10 train the fitted set; the rest are scored."""
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-spot-5m-universe"


def log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-15, 1 - 1e-15)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


def auc(p: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(p, kind="stable")
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    pos = y == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def interval(diff: np.ndarray, day: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """95 % day-block bootstrap interval of the mean of ``diff``."""
    days, inv = np.unique(day, return_inverse=True)
    sums, counts = np.bincount(inv, diff), np.bincount(inv)
    means = []
    for _ in range(1000):
        pick = rng.integers(0, len(days), len(days))
        means.append(sums[pick].sum() / counts[pick].sum())
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--start", default="2024-03-01")
    ap.add_argument("--train-weeks", type=int, default=6)
    ap.add_argument("--eval-weeks", type=int, default=6)
    ap.add_argument("--learning-rate", type=float, default=0.01)
    args = ap.parse_args()
    if not args.data.exists():
        raise SystemExit(f"the shared data is not here ({args.data}; see ../shared/data/README)")
    start = datetime.fromisoformat(args.start).replace(tzinfo=None)
    cut = start + timedelta(weeks=args.train_weeks)
    end = cut + timedelta(weeks=args.eval_weeks)
    bars, _ = load_dataset([args.data])
    bars = bars.filter(pl.col("ts").dt.replace_time_zone(None).is_between(start, end, closed="left"))
    tokens = sorted(bars["token"].unique().to_list())
    seen = [t for t in tokens if zlib.crc32(t.encode()) % 10 < TRAIN_TENTHS]
    unseen = [t for t in tokens if t not in seen]
    print(
        f"{bars.height:,} bars of {len(tokens)} tokens, {args.start} + {args.train_weeks} weeks of training "
        f"({len(seen)} tokens) + {args.eval_weeks} weeks scored ({len(unseen)} other tokens)"
    )
    cfg = parse_config(f'[train]\nmodels = ["logreg"]\nhorizons = [{H}]\n')
    with tempfile.TemporaryDirectory() as tmp:
        train = bars.filter(pl.col("token").is_in(seen) & (pl.col("ts").dt.replace_time_zone(None) < cut))
        write_dataset(train, Path(tmp) / "train.parquet")
        t0 = time.perf_counter()
        train_model_set([Path(tmp) / "train.parquet"], cfg, Path(tmp) / "registry", command="benchmark")
        print(f"trained the logistic set in {time.perf_counter() - t0:.1f} s")
        ms = load_model_set(Path(tmp) / "registry")
        up_rate = float(add_labels(train, [H], "exclude")[label_col(H)].drop_nulls().mean())
        online = OnlineConfig(enabled=True, horizons=(H,), learning_rate=args.learning_rate)
        signals = msgspec.structs.replace(MemedConfig().signals, models=("logreg",), online=online,
                                          policy="bands")  # fmt: skip
        path = DecisionPath(ms, signals, MemedConfig().risk)
        test = bars.filter(pl.col("token").is_in(unseen))
        t0 = time.perf_counter()
        frame = replay_signals_minutewise(
            path, test, [(test["ts"].min(), test["ts"].max() + timedelta(minutes=1))]
        )
        print(f"decided {frame.height:,} bars minute by minute in {time.perf_counter() - t0:.1f} s")
    labels = add_labels(test, [H], "exclude").select("token", "ts", label_col(H))
    rows = frame.join(labels, on=["token", "ts"]).filter(
        (pl.col("ts").dt.replace_time_zone(None) >= cut) & pl.col(label_col(H)).is_not_null()
        & pl.col(f"m_logreg_{H}").is_not_nan() & pl.col(f"m_online_{H}").is_not_nan()
    )  # fmt: skip
    y = rows[label_col(H)].to_numpy()
    day = (rows["ts"].dt.epoch("s") // 86400).to_numpy()
    p = {
        "fitted logistic": rows[f"m_logreg_{H}"].to_numpy(),
        "online": rows[f"m_online_{H}"].to_numpy(),
        "ensemble (both)": rows[f"p_{H}"].to_numpy(),
        "constant up-rate": np.full(len(y), up_rate),
    }
    rng = np.random.default_rng(0)
    base = log_loss(p["fitted logistic"], y)
    print(
        f"\n{rows.height:,} labelled rows scored ({len(np.unique(day))} days), horizon {H} min, up-rate "
        f"{y.mean():.3f}\n"
    )
    print(f"{'member':<18}{'log loss':>10}{'AUC':>8}   Δ log loss vs fitted [95 % day-block interval]")
    for name, q in p.items():
        ll = log_loss(q, y)
        d = ll - base
        lo, hi = interval(d, day, rng)
        a = auc(q, y) if q.std() > 0 else 0.5
        print(f"{name:<18}{ll.mean():>10.5f}{a:>8.4f}   {d.mean():+.5f} [{lo:+.5f}, {hi:+.5f}]")


if __name__ == "__main__":
    main()
