"""Learning-curve charts as standalone SVG.

Written by hand rather than with a plotting library: a line chart with axes is a few dozen
elements, SVG opens in every browser and renders in Markdown, and the report job then needs
nothing beyond what analytics already installs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f")
WIDTH, HEIGHT = 720, 420
MARGIN = {"left": 70, "right": 20, "top": 52, "bottom": 90}


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    #: Optional band (e.g. the range across seeds), drawn under the line.
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    extra: dict = field(default_factory=dict)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def _fmt(value: float) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if abs(value) >= 10_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def line_chart(title: str, series: Sequence[Series], *, x_label: str = "environment steps",
               y_label: str = "return", threshold: float | None = None) -> str:
    xs = [v for s in series for v in s.x]
    ys = [v for s in series for v in (*s.y, *(s.low or ()), *(s.high or ())) if v is not None and math.isfinite(v)]
    if threshold is not None:
        ys.append(threshold)
    x_ticks = nice_ticks(min(xs, default=0.0), max(xs, default=1.0))
    y_ticks = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    left, top = MARGIN["left"], MARGIN["top"]
    plot_w = WIDTH - MARGIN["left"] - MARGIN["right"]
    plot_h = HEIGHT - MARGIN["top"] - MARGIN["bottom"]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
           f"<title>{escape(title)}</title>",
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{WIDTH / 2:.1f}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>']
    for t in x_ticks:
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{px(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for t in y_ticks:
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + plot_w}" y2="{py(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 36}" text-anchor="middle">'
               f"{escape(x_label)}</text>")
    out.append(f'<text transform="translate(18 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
               f"{escape(y_label)}</text>")
    if threshold is not None:
        out.append(f'<line x1="{left}" y1="{py(threshold):.1f}" x2="{left + plot_w}" y2="{py(threshold):.1f}" '
                   f'stroke="#555" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{left + plot_w - 4}" y="{py(threshold) - 5:.1f}" text-anchor="end" fill="#555">'
                   f"reward threshold {_fmt(threshold)}</text>")
    if any(s.low is not None for s in series):
        out.append(f'<text x="{left}" y="{top - 8}" fill="#555" font-size="11">line: mean across seeds; '
                   f"band: lowest to highest seed</text>")
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        if s.low is not None and s.high is not None and len(s.x) > 1:
            upper = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(s.x, s.high, strict=True))
            lower = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in reversed(list(zip(s.x, s.low, strict=True))))
            out.append(f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.15" stroke="none"/>')
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(s.x, s.y, strict=True))
        if len(s.x) == 1:
            out.append(f'<circle cx="{px(s.x[0]):.1f}" cy="{py(s.y[0]):.1f}" r="3" fill="{colour}"/>')
        else:
            out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for i, s in enumerate(series[:9]):
        colour = PALETTE[i % len(PALETTE)]
        lx = left + (i % 3) * (plot_w / 3)
        ly = top + plot_h + 56 + (i // 3) * 16
        out.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="12" height="4" fill="{colour}"/>')
        out.append(f'<text x="{lx + 18:.1f}" y="{ly - 4}">{escape(s.label[:40])}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
