"""Champion and challenger: a second model set served in shadow — it sees every minute the champion
sees, its probabilities are scored on the same delayed labels, nothing of it is published — and
promoted only on evidence.

At each snapshot minute both score boards cover the same window. The challenger is promoted when, over
the horizons both sets serve, each with at least ``min_labels`` labels in both windows, its mean log loss
is lower than the champion's by at least ``margin``. The evidence (per horizon: labels and both log
losses) is returned for the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    champion_log_loss: float | None
    challenger_log_loss: float | None
    evidence: dict[str, dict[str, float]]


def judge(champion: dict[str, dict[str, Any]], challenger: dict[str, dict[str, Any]], margin: float,
          min_labels: int) -> Verdict:  # fmt: skip
    """Compare two snapshots' scores (``horizon → scores``)."""
    common = sorted(set(champion) & set(challenger), key=int)
    evidence: dict[str, dict[str, float]] = {}
    for h in common:
        a, b = champion[h], challenger[h]
        n = min(int(a.get("n", 0)), int(b.get("n", 0)))
        if n < min_labels or a.get("log_loss") is None or b.get("log_loss") is None:
            return Verdict(False, f"horizon {h}: {n} labels, fewer than {min_labels}", None, None, evidence)
        evidence[h] = {"labels": n, "champion": float(a["log_loss"]), "challenger": float(b["log_loss"])}
    if not evidence:
        return Verdict(False, "no horizon in common", None, None, evidence)
    mean_a = sum(e["champion"] for e in evidence.values()) / len(evidence)
    mean_b = sum(e["challenger"] for e in evidence.values()) / len(evidence)
    better = mean_a - mean_b >= margin
    said = f"log loss {mean_b:.4f} against {mean_a:.4f}" + ("" if better else f": not better by {margin}")
    return Verdict(better, said, mean_a, mean_b, evidence)
