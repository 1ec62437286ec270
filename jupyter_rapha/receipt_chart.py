"""The loss curve of a receipt's metrics: inline SVG for HTML, a sparkline for text.

No JavaScript and no external assets, so the curve shows in a static notebook render
exactly as in a live one. Values come from the signed metrics, which the edge already
limited to finite numbers.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

_SPARK = "▁▂▃▄▅▆▇█"
WIDTH, HEIGHT, PAD = 260, 80, 6


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


def _scaled(values: list[float]) -> list[tuple[float, float]]:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)
    return [(PAD + i * step, PAD + (high - v) / span * (HEIGHT - 2 * PAD)) for i, v in enumerate(values)]


def svg_curve(name: str, values: list[float]) -> str:
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in _scaled(values))
    dots = "".join(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='2' fill='#0969da'/>" for x, y in _scaled(values)[-1:])
    label = escape(f"{name}: {values[0]:.4g} → {values[-1]:.4g} over {len(values)} steps")
    return (f"<svg class='rapha-loss' xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
            f"viewBox='0 0 {WIDTH} {HEIGHT}' role='img' aria-label='{label}'>"
            f"<title>{label}</title><rect width='{WIDTH}' height='{HEIGHT}' fill='#f6f8fa'/>"
            f"<polyline fill='none' stroke='#0969da' stroke-width='1.5' points='{points}'/>{dots}</svg>"
            f"<div style='color:#57606a;font-size:11px'>{label}</div>")


def sparkline(values: list[float]) -> str:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_SPARK[round((v - low) / span * (len(_SPARK) - 1))] for v in values)
