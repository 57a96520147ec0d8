"""Does a feature family earn its place in the default spec?

Family: ``market`` (the five ``mkt_*`` market context features, ``data.market_context``). (``clock``,
the minute of day, was evaluated the same way at commit 432128d and dropped from the kernel.)

Builds the training table of a dataset once (with the market context for ``market``), fits memed's
logistic regression (the default served family, ``trainers.tabular.train_logreg``) on the train split
twice -- with and without the family, on the same rows -- and reports per horizon the ROC AUC of each
and their paired difference with a day-block bootstrap interval, on the validation split (where the
choice is made) and on the test split (reported, never chosen on).

The split is the ``mixed`` strategy by default: the test split holds tokens never trained on, after the
training period (one calendar cut), so "test" means unseen tokens in unseen time.

Rule, fixed before running: the family belongs in the default spec only if, on validation, it improves
the AUC by at least ``--min-gain`` (0.005) with a paired interval excluding zero at three or more
horizons.

    python benchmarks/feature_family.py --family market [--data DIR ...] [--split mixed]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import msgspec
import numpy as np

from memed.config import load_config
from memed.data.frames import epoch_minutes
from memed.features.spec import MARKET_FEATURES
from memed.trainers.dataset import build_training_data
from memed.trainers.metrics import roc_auc
from memed.trainers.tabular import train_logreg
from memed.trainers.uncertainty import day_index, day_weights, paired_difference

MIN_HORIZONS = 3
FAMILIES = {"market": MARKET_FEATURES}
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binance-spot-5m-universe"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(FAMILIES), default="market")
    ap.add_argument("--data", type=Path, nargs="+", default=[DEFAULT_DATA])
    ap.add_argument("--split", default="mixed", choices=["temporal", "token", "mixed"])
    ap.add_argument("--min-gain", type=float, default=0.005)
    args = ap.parse_args()
    for d in args.data:
        if not d.exists():
            raise SystemExit(f"{d} not found (the shared data folder); pass --data")

    base = load_config(None)
    cfg = msgspec.structs.replace(
        base,
        data=msgspec.structs.replace(base.data, market_context=args.family == "market"),
        train=msgspec.structs.replace(base.train, split=args.split),
    )
    t0 = time.perf_counter()
    data = build_training_data(args.data, cfg)
    names = data.spec.names
    family = FAMILIES[args.family]
    without = [i for i, n in enumerate(names) if n not in family]
    print(f"{data.frame.height:,} rows, {data.frame['token'].n_unique()} tokens, "
          f"{data.interval_minutes}-minute bars, horizons {data.horizons}, split {args.split} "
          f"(built in {time.perf_counter() - t0:.0f} s)")  # fmt: skip
    masks = {s: data.split_mask(s) for s in ("train", "val", "test")}
    x_tr, y_tr = data.x(masks["train"]), data.y(masks["train"])
    evals = {
        s: (data.x(masks[s]), data.y(masks[s]), day_index(epoch_minutes(data.frame.filter(masks[s])["ts"])))
        for s in ("val", "test")
    }
    for s, (x, _, days) in evals.items():
        print(f"  {s}: {len(x):,} rows, {len(np.unique(days))} days, "
              f"{data.frame.filter(masks[s])['token'].n_unique()} tokens")  # fmt: skip
    probe = np.vstack([evals["val"][0], evals["test"][0]])
    nv = len(evals["val"][0])
    lr = cfg.train.logreg
    fits = {
        "with": train_logreg(x_tr, y_tr, probe, lr, "market").native_test,
        "without": train_logreg(x_tr[:, without], y_tr, probe[:, without], lr, "base").native_test,
    }
    wins = 0
    for s, (_, y, days) in evals.items():
        weights = day_weights(int(days.max()) + 1, seed=cfg.train.seed)
        print(f"\n{s}: ROC AUC without / with {args.family}, paired difference [95% day-block interval]")
        for k, h in enumerate(data.horizons):
            sl = slice(0, nv) if s == "val" else slice(nv, None)
            pw, po = fits["with"][sl, k], fits["without"][sl, k]
            d = paired_difference(y[:, k], pw, po, days, weights, "without")
            a_w = d["roc_auc_vs_without"]
            lo, hi = d["roc_auc_vs_without_lo"], d["roc_auc_vs_without_hi"]
            gain = a_w is not None and lo is not None and a_w >= args.min_gain and lo > 0
            if s == "val" and gain:
                wins += 1
            keep = ~np.isnan(y[:, k])
            print(f"  {h:>4} m  {roc_auc(y[keep, k], po[keep]):.4f} / {roc_auc(y[keep, k], pw[keep]):.4f}  "
                  f"{a_w:+.4f} [{lo:+.4f}, {hi:+.4f}]{'  gain' if gain else ''}")  # fmt: skip
    verdict = "belongs in" if wins >= MIN_HORIZONS else "stays out of"
    print(f"\nvalidation gains at {wins} horizon(s): {args.family} {verdict} the default spec")


if __name__ == "__main__":
    main()
