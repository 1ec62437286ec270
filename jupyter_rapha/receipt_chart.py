"""The loss curve of a receipt's metrics (and of a job's live progress): inline SVG with
axes for HTML, a sparkline for text.

No JavaScript and no external assets, so the curve shows in a static notebook render
exactly as in a live one. Values come from the signed metrics (or the event stream), which
the edge already limited to finite numbers; labels are escaped all the same.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any
from collections.abc import Sequence

_SPARK = "▁▂▃▄▅▆▇█"
WIDTH, HEIGHT = 320, 170
# Room for the y tick labels on the left and the x tick labels and axis title below.
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 10, 36
_AXIS = "#57606a"
# What the chart says while a job runs or is held: a metric value leaves the edge only once
# the output checks released it (S5), so a remote job's curve is drawn after release.
RELEASED_AFTER_CHECKS = "loss is released after the output checks"


def x_label_for(count: int, epochs: Any) -> str:
    """The x axis of a released series: "epoch" when it holds one value per epoch the job
    asked for (a cell that logs once per epoch), else "step" (one per ``rapha.log`` call)."""
    asked = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else 0
    return "epoch" if asked > 0 and count == asked else "step"


def pending_html() -> str:
    return (f"<div class='rapha-loss-pending' style='color:#57606a;font-size:11px;border:1px dashed #d0d7de;"
            f"padding:6px;width:{WIDTH - 14}px'>{escape(RELEASED_AFTER_CHECKS)}</div>")


def curve_metric(metrics: Any) -> tuple[str, list[float]] | None:
    """The series to draw: ``loss`` if present, else the first name holding "loss"."""
    if not isinstance(metrics, dict):
        return None
    names = sorted(k for k in metrics if isinstance(k, str) and "loss" in k.lower())
    for name in (["loss"] if "loss" in metrics else []) + names:
        values = _finite(metrics.get(name))
        if values:
            return name, values
    return None


def _finite(series: Any) -> list[float]:
    if not isinstance(series, list):
        return []
    return [float(v) for v in series if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v))]


def nice_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(most - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _x_ticks(low: float, high: float) -> list[float]:
    """Whole steps or epochs: at most six, never a fractional one."""
    if high <= low:
        return [low]
    ticks = [t for t in nice_ticks(low, high, 6) if float(t).is_integer() and low <= t <= high]
    return ticks or [low, high]


def _label(value: float) -> str:
    return f"{value:.3g}" if value != 0 else "0"


def svg_curve(name: str, values: Sequence[float], xs: Sequence[float] | None = None,
              x_label: str = "step") -> str:
    """``values`` against ``xs`` (default 1, 2, 3 ...: the step), with both axes, their
    tick labels, and the axis titles (``x_label`` below, ``name`` on the left)."""
    ys = [float(v) for v in values]
    points_x = [float(x) for x in xs] if xs is not None else [float(i + 1) for i in range(len(ys))]
    y_ticks = nice_ticks(min(ys), max(ys))
    x_ticks = _x_ticks(min(points_x), max(points_x))
    y_low, y_high = y_ticks[0], y_ticks[-1]
    x_low, x_high = min(x_ticks[0], min(points_x)), max(x_ticks[-1], max(points_x))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_low) / ((x_high - x_low) or 1.0) * plot_w

    def py(y: float) -> float:
        return TOP + (y_high - y) / ((y_high - y_low) or 1.0) * plot_h

    scaled = [(px(x), py(y)) for x, y in zip(points_x, ys, strict=True)]
    label = escape(f"{name}: {ys[0]:.4g} → {ys[-1]:.4g} over {_count(len(ys), x_label)}")
    parts = [f"<svg class='rapha-loss' xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
             f"viewBox='0 0 {WIDTH} {HEIGHT}' role='img' aria-label='{label}' font-family='sans-serif' font-size='10'>",
             f"<title>{label}</title><rect width='{WIDTH}' height='{HEIGHT}' fill='#f6f8fa'/>",
             _axes(x_ticks, y_ticks, px, py, escape(x_label), escape(name))]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in scaled)
    parts.append(f"<polyline fill='none' stroke='#0969da' stroke-width='1.5' points='{points}'/>")
    x, y = scaled[-1]
    parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='2.5' fill='#0969da'/></svg>")
    return "".join(parts) + f"<div style='color:#57606a;font-size:11px'>{label}</div>"


def _axes(x_ticks: list[float], y_ticks: list[float], px: Any, py: Any, x_title: str, y_title: str) -> str:
    bottom, left = HEIGHT - BOTTOM, LEFT
    out = [f"<g class='rapha-axes' stroke='{_AXIS}' stroke-width='1'>"
           f"<line class='x-axis' x1='{left}' y1='{bottom}' x2='{WIDTH - RIGHT}' y2='{bottom}'/>"
           f"<line class='y-axis' x1='{left}' y1='{TOP}' x2='{left}' y2='{bottom}'/></g>"]
    for tick in x_ticks:
        x = px(tick)
        out.append(f"<line x1='{x:.1f}' y1='{bottom}' x2='{x:.1f}' y2='{bottom + 4}' stroke='{_AXIS}'/>"
                   f"<text class='x-tick' x='{x:.1f}' y='{bottom + 14}' text-anchor='middle' fill='{_AXIS}'>"
                   f"{_label(tick)}</text>")
    for tick in y_ticks:
        y = py(tick)
        out.append(f"<line x1='{left - 4}' y1='{y:.1f}' x2='{left}' y2='{y:.1f}' stroke='{_AXIS}'/>"
                   f"<line x1='{left}' y1='{y:.1f}' x2='{WIDTH - RIGHT}' y2='{y:.1f}' stroke='#d0d7de' "
                   f"stroke-dasharray='2,3'/>"
                   f"<text class='y-tick' x='{left - 6}' y='{y + 3:.1f}' text-anchor='end' fill='{_AXIS}'>"
                   f"{_label(tick)}</text>")
    out.append(f"<text class='x-label' x='{LEFT + (WIDTH - LEFT - RIGHT) / 2:.0f}' y='{HEIGHT - 4}' "
               f"text-anchor='middle' fill='{_AXIS}'>{x_title}</text>")
    middle = TOP + (HEIGHT - TOP - BOTTOM) / 2
    out.append(f"<text class='y-label' x='12' y='{middle:.0f}' text-anchor='middle' fill='{_AXIS}' "
               f"transform='rotate(-90 12 {middle:.0f})'>{y_title}</text>")
    return "".join(out)


def sparkline(values: list[float]) -> str:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_SPARK[round((v - low) / span * (len(_SPARK) - 1))] for v in values)


def curve_line(name: str, values: Sequence[float], x_label: str = "step") -> str:
    """The chart as one text line: ``loss ▇▅▂▁  0.69 -> 0.21 over 4 epochs``."""
    return f"{name} {sparkline(list(values))}  {values[0]:.4g} -> {values[-1]:.4g} over {_count(len(values), x_label)}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
