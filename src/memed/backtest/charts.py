"""The report's inline SVG charts: dated equity and drawdown lines, the trade-return histogram and the
reliability plot. No script, no network: each is one ``<svg>`` element."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

import numpy as np

COLORS = {
    "model": "#1f6feb",
    "buy_and_hold": "#8b949e",
    "persistence": "#d29922",
    "reversal": "#a371f7",
    "always_hold": "#3fb950",
}
W, H, PAD = 860, 260, 40
MAX_POINTS = 2_000
"""Points drawn per series at most (a chart is 780 pixels wide; more only makes the page heavy)."""
X_TICKS = 5


def _polyline(xs: np.ndarray, ys: np.ndarray, x0: float, x1: float, y0: float, y1: float, color: str) -> str:
    if len(xs) == 0:
        return ""
    if len(xs) > MAX_POINTS:  # evenly spaced points, the first and the last kept
        keep = np.unique(np.linspace(0, len(xs) - 1, MAX_POINTS).round().astype(np.int64))
        xs, ys = xs[keep], ys[keep]
    sx = (xs - x0) / max(x1 - x0, 1e-12) * (W - 2 * PAD) + PAD
    sy = H - PAD - (ys - y0) / max(y1 - y0, 1e-12) * (H - 2 * PAD)
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(sx, sy, strict=True))
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{pts}"/>'


def chart(title: str, series: dict[str, tuple[np.ndarray, np.ndarray]], fmt: str, css_id: str) -> str:
    ys_all = np.concatenate([y for _, y in series.values() if len(y)]) if series else np.zeros(1)
    xs_all = np.concatenate([x for x, _ in series.values() if len(x)]) if series else np.zeros(1)
    y0, y1 = float(np.min(ys_all)), float(np.max(ys_all))
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1
    x0, x1 = float(np.min(xs_all)), float(np.max(xs_all))
    lines = "".join(_polyline(x, y, x0, x1, y0, y1, COLORS.get(n, "#000")) for n, (x, y) in series.items())
    axis = (
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>'
        f'<text x="{PAD + 4}" y="{PAD - 6}" font-size="11">{fmt.format(y1)}</text>'
        f'<text x="{PAD + 4}" y="{H - PAD - 4}" font-size="11">{fmt.format(y0)}</text>' + _date_ticks(x0, x1)
    )
    legend = "".join(
        f'<tspan fill="{COLORS.get(n, "#000")}" dx="12">\u25a0 {html.escape(n)}</tspan>' for n in series
    )
    return (
        f'<h2>{html.escape(title)}</h2><svg id="{css_id}" class="chart" width="{W}" height="{H}" '
        f'xmlns="http://www.w3.org/2000/svg">{axis}{lines}'
        f'<text x="{PAD}" y="{H - 10}" font-size="12">{legend}</text></svg>'
    )


def _date_ticks(x0: float, x1: float) -> str:
    """Dated labels under the x axis (``x0``, ``x1``: epoch seconds, UTC)."""
    span = x1 - x0
    fmt = "%Y-%m-%d" if span > 3 * 86400 else "%m-%d %H:%M"
    out = []
    for k in range(X_TICKS):
        t = x0 + span * k / (X_TICKS - 1)
        x = PAD + (W - 2 * PAD) * k / (X_TICKS - 1)
        anchor = "start" if k == 0 else ("end" if k == X_TICKS - 1 else "middle")
        label = datetime.fromtimestamp(t, UTC).strftime(fmt)
        out.append(f'<text class="xtick" x="{x:.0f}" y="{H - PAD + 14}" font-size="10" '
                   f'text-anchor="{anchor}">{label}</text>')  # fmt: skip
    return "".join(out)


def histogram(returns: np.ndarray) -> str:
    if len(returns) == 0:
        return "<h2>Trade returns</h2><p>No trades.</p>"
    counts, edges = np.histogram(np.clip(returns, -0.5, 0.5), bins=30)
    top = max(int(counts.max()), 1)
    bw = (W - 2 * PAD) / len(counts)
    bars = "".join(
        f'<rect x="{PAD + i * bw:.1f}" y="{H - PAD - c / top * (H - 2 * PAD):.1f}" width="{bw - 1:.1f}" '
        f'height="{c / top * (H - 2 * PAD):.1f}" fill="{"#3fb950" if edges[i] >= 0 else "#f85149"}"/>'
        for i, c in enumerate(counts)
    )
    return (
        f'<h2>Trade returns ({len(returns)} trades)</h2><svg id="trades" class="chart" width="{W}" '
        f'height="{H}" xmlns="http://www.w3.org/2000/svg">{bars}'
        f'<text x="{PAD}" y="{H - 10}" font-size="11">{edges[0]:+.1%}</text>'
        f'<text x="{W - PAD - 40}" y="{H - 10}" font-size="11">{edges[-1]:+.1%}</text></svg>'
    )


def reliability_plot(curves: dict[str, list[dict[str, Any]]]) -> str:
    """Per horizon, the served p_up bins' mean p_up against the share that went up (each bin's dot sized
    by its rows), over the diagonal a calibrated model would sit on. ``curves``: horizon label → bins."""
    side = H
    span = side - 2 * PAD
    palette = ("#1f6feb", "#d29922", "#a371f7", "#3fb950", "#f85149", "#8b949e", "#bf3989", "#0a7f7f")

    def at(p: float, rate: float) -> tuple[float, float]:
        return PAD + p * span, side - PAD - rate * span

    parts = [
        f'<line x1="{PAD}" y1="{side - PAD}" x2="{side - PAD}" y2="{PAD}" stroke="#bbb" '
        'stroke-dasharray="4 3"/>',
        f'<line x1="{PAD}" y1="{side - PAD}" x2="{side - PAD}" y2="{side - PAD}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{side - PAD}" stroke="#999"/>',
        f'<text x="{PAD}" y="{side - PAD + 14}" font-size="10">0</text>',
        f'<text x="{side - PAD}" y="{side - PAD + 14}" font-size="10" text-anchor="end">p_up 1</text>',
        f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">1</text>',
    ]
    legend = []
    for k, (label, bins) in enumerate(curves.items()):
        color = palette[k % len(palette)]
        pts = [(b["mean_p"], b["rate"], b["rows"]) for b in bins if b.get("rows")]
        if not pts:
            continue
        xy = [at(p, r) for p, r, _ in pts]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.2" '
                     f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in xy)}"/>')  # fmt: skip
        top = max(n for _, _, n in pts)
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{2 + 3 * (n / top) ** 0.5:.1f}" fill="{color}"/>'
                  for (x, y), (_, _, n) in zip(xy, pts, strict=True)]  # fmt: skip
        legend.append(f'<tspan fill="{color}" dx="10">\u25cf {html.escape(label)}</tspan>')
    return (
        f'<svg id="reliability" class="chart" width="{side + 160}" height="{side}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}'
        f'<text x="{side}" y="{PAD}" font-size="11">{"".join(legend[:1])}</text>'
        + "".join(
            f'<text x="{side}" y="{PAD + 16 * (i + 1)}" font-size="11">{t}</text>'
            for i, t in enumerate(legend[1:])
        )
        + "</svg>"
    )
