"""Hand-drawn SVG charts: lines (log or linear axis) and bars with interval whiskers.

Plain strings, no plotting library: report.html stays one self-contained file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.report.stats import Interval

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
           "#ff9da7", "#bab0ac", "#e15759")
# Reference rows, by role: floors in greys and reds, ceilings in greens (in declared order).
REF_PALETTES = {"floor": ("#444444", "#d62728", "#8c564b", "#7f7f7f"),
                "ceiling": ("#2ca02c", "#17becf", "#bcbd22")}


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[tuple[float, float], ...]
    colour: str
    dashed: bool = False


def _ticks(lo: float, hi: float, n: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick values between lo and hi, about n of them (whole numbers if ``integer``)."""
    if hi <= lo:
        return [lo]
    raw = max((hi - lo) / n, 1.0 if integer else 0.0)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis given log10 bounds: 1-2-5 steps, else plain ones in value space."""
    ticks = [m * 10.0**k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo <= math.log10(t) <= hi]
    if len(ticks) > 7:  # several decades: powers of ten only
        ticks = [t for t in ticks if math.log10(t).is_integer()] or ticks
    if len(ticks) < 3:
        ticks = [t for t in _ticks(10**lo, 10**hi, 4) if t > 0]
    return [math.log10(t) for t in ticks]


def _num(v: float) -> str:
    return f"{v:.4g}"


def _svg_frame(title: str, width: int, height: int, body: list[str]) -> str:
    return (f'<svg class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">'
            f'<title>{html.escape(title)}</title>'
            f'<text x="{width / 2}" y="16" class="ct">{html.escape(title)}</text>'
            + "".join(body) + "</svg>")


def svg_lines(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
              width: int = 640, height: int = 300, log_y: bool = False) -> str:
    """A line chart with axes, ticks and a legend; non-finite points are left out.

    ``log_y`` falls back to a linear axis when a value is zero or negative (a loss with an
    entropy term goes below zero): a log axis would silently drop that whole series.
    """
    if log_y and any(y <= 0 for s in series for _, y in s.points if math.isfinite(y)):
        log_y = False

    def ty(v: float) -> float:
        return math.log10(v) if log_y else v

    pts = [(x, ty(y)) for s in series for x, y in s.points
           if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 60, 170, 28, 40
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="pa"/>']
    for t in _log_ticks(y0, y1) if log_y else _ticks(y0, y1):
        label = _num(10**t) if log_y else _num(t)
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                    f'class="grid"/><text x="{left - 6}" y="{sy(t) + 4:.1f}" class="yt">'
                    f'{label}</text>')
    integer_x = all(float(x).is_integer() for s in series for x, _ in s.points)
    for t in _ticks(x0, x1, integer=integer_x):
        body.append(f'<text x="{sx(t):.1f}" y="{top + ph + 16}" class="xt">{_num(t)}</text>')
    body.append(f'<text x="{left + pw / 2}" y="{height - 6}" class="xt">'
                f'{html.escape(x_label)}</text>')
    body.append(f'<text x="14" y="{top + ph / 2}" class="yl" transform="rotate(-90 14 '
                f'{top + ph / 2})">{html.escape(y_label)}</text>')
    shown = 0
    for s in series:
        sp = [(sx(x), sy(ty(y))) for x, y in s.points
              if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)]
        if not sp:
            continue
        shown += 1
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in sp)
        body.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" '
                    f'stroke-width="1.8"{dash}/>')
        if len(sp) <= 30:
            body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{s.colour}"/>'
                     for x, y in sp]
        ly = top + 10 + (shown - 1) * 16
        body.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" '
                    f'stroke="{s.colour}" stroke-width="2"{dash}/><text x="{left + pw + 34}" '
                    f'y="{ly + 4}" class="lg">{html.escape(s.label)}</text>')
    return _svg_frame(title, width, height, body)


def svg_bars(bars: Sequence[tuple[str, Interval, str]],
             refs: Sequence[tuple[str, float, str, str | None]], *, title: str, y_label: str,
             width: int = 640, height: int = 300) -> str:
    """Bars (mean with a 95% interval whisker) and dashed reference lines: (label, value,
    colour, bar) spans the whole chart when bar is None, else only that bar's slot."""
    values = [iv.mean + (iv.half_width or 0) for _, iv, _ in bars if not math.isnan(iv.mean)]
    values += [v for _, v, _, _ in refs if math.isfinite(v)]
    if not values:
        return ""
    lows = [iv.mean - (iv.half_width or 0) for _, iv, _ in bars if not math.isnan(iv.mean)]
    y0 = min(0.0, *lows, *[v for _, v, _, _ in refs if math.isfinite(v)])
    y1 = max(values) * 1.08 or 1.0
    left, right, top, bottom = 60, 170, 28, 48
    pw, ph = width - left - right, height - top - bottom

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="pa"/>']
    for t in _ticks(y0, y1):
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                    f'class="grid"/><text x="{left - 6}" y="{sy(t) + 4:.1f}" class="yt">'
                    f'{_num(t)}</text>')
    body.append(f'<text x="14" y="{top + ph / 2}" class="yl" transform="rotate(-90 14 '
                f'{top + ph / 2})">{html.escape(y_label)}</text>')
    slot = pw / max(1, len(bars))
    for i, (label, iv, colour) in enumerate(bars):
        cx = left + slot * (i + 0.5)
        body.append(f'<text x="{cx:.1f}" y="{top + ph + 16}" class="xt">'
                    f'{html.escape(label)}</text>')
        if math.isnan(iv.mean):
            continue
        bw = min(60.0, slot * 0.6)
        body.append(f'<rect x="{cx - bw / 2:.1f}" y="{sy(max(iv.mean, 0)):.1f}" '
                    f'width="{bw:.1f}" height="{abs(sy(iv.mean) - sy(0)):.1f}" '
                    f'fill="{colour}"><title>{html.escape(label)}: '
                    f'{iv.format(4)} (n={iv.n})</title></rect>')
        if iv.half_width:
            lo, hi = sy(iv.mean - iv.half_width), sy(iv.mean + iv.half_width)
            body.append(f'<path d="M{cx:.1f},{lo:.1f}V{hi:.1f}M{cx - 6:.1f},{lo:.1f}'
                        f'h12M{cx - 6:.1f},{hi:.1f}h12" stroke="#222" fill="none"/>')
        body.append(f'<text x="{cx:.1f}" y="{top + ph + 30}" class="xt">n={iv.n}</text>')
    legend: list[str] = []
    slots = {label: i for i, (label, _, _) in enumerate(bars)}
    for label, value, colour, bar_label in refs:
        if not math.isfinite(value):
            continue
        x_from, x_to = float(left), float(left + pw)
        if bar_label is not None:  # this bar's own reference: a segment over its slot only
            if bar_label not in slots:
                continue
            x_from = left + slot * slots[bar_label] + 4
            x_to = x_from + slot - 8
        body.append(f'<line x1="{x_from:.1f}" x2="{x_to:.1f}" y1="{sy(value):.1f}" '
                    f'y2="{sy(value):.1f}" stroke="{colour}" stroke-width="1.5" '
                    f'stroke-dasharray="6 4"><title>{html.escape(label)} {_num(value)}'
                    "</title></line>")
        text = label if bar_label is not None else f"{label} {_num(value)}"
        if text in legend:
            continue
        legend.append(text)
        ly = top + 10 + (len(legend) - 1) * 16
        body.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" '
                    f'stroke="{colour}" stroke-width="2" stroke-dasharray="6 4"/>'
                    f'<text x="{left + pw + 34}" y="{ly + 4}" class="lg">'
                    f'{html.escape(text)}</text>')
    return _svg_frame(title, width, height, body)
