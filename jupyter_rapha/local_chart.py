"""The live loss chart of a ``--local`` dry run, redrawn as the cell trains.

A dry run reads synthetic records only and touches nothing at an edge, so its metric
values are the researcher's own to watch as they come (a remote job's values leave the
edge only once released, see ``progress.py``). Each ``rapha.log`` call reaches the view;
the chart is the series ``loss`` (or the first name holding "loss") on labelled axes: x is
the epoch when the cell logs once per pass over the cohort, else the logged step.

In a Jupyter kernel with ipywidgets the chart is an HTML widget updated in place (its
text form, what a headless run saves, is the same line the text view prints); elsewhere
(plain IPython, papermill logs) one text line per epoch: ``rapha: local epoch 2/3 | loss
▇▄ 0.69 -> 0.42 over 2 epochs``. Redrawing is throttled within an epoch (a cell logging
every batch would otherwise redraw hundreds of times a second); a new epoch and the end of
the run always redraw.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .receipt_chart import curve_line, svg_curve

REDRAW_SECONDS = 0.5  # the least time between two redraws within one epoch


class LossSeries:
    """What the cell logged, each value with the pass over the cohort it came in (the
    passes of every loader the cell made, counted together, 0 before the first)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.values: dict[str, list[tuple[int, float]]] = {}

    def add(self, metrics: dict[str, float], epoch: int) -> None:
        for name, value in metrics.items():
            self.values.setdefault(name, []).append((epoch, value))

    def curve(self) -> tuple[str, list[float], list[float], str] | None:
        """(name, values, xs, x label): per epoch when each pass logged it once, else per step."""
        names = (["loss"] if "loss" in self.values else []) + sorted(n for n in self.values if "loss" in n.lower())
        if not names:
            return None
        name = names[0]
        points = self.values[name]
        # one value in each of passes 1, 2, 3 ...: the epochs; anything else is drawn per log call
        per_epoch = [epoch for epoch, _ in points] == list(range(1, len(points) + 1))
        xs = [float(i + 1) for i in range(len(points))]
        return name, [v for _, v in points], xs, "epoch" if per_epoch else "step"

    def line(self, epoch: int) -> str:
        where = f"local epoch {epoch}/{self.epochs}" if self.epochs else f"local epoch {epoch}"
        curve = self.curve()
        return where if curve is None else f"{where} | {curve_line(curve[0], curve[1], curve[3])}"


class LocalChart:
    """Fed by the dry run's ``rapha``: ``logged(metrics, epoch)`` after each ``rapha.log``,
    ``finish()`` at the end. ``widget=False`` writes text lines to ``stream``."""

    def __init__(self, epochs: int, widget: bool, stream: TextIO | None = None,
                 display: Callable[..., Any] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.series = LossSeries(epochs)
        self.stream = stream if stream is not None else sys.stdout
        self.clock = clock
        self.epoch = 0
        self._drawn_at: float | None = None
        self._drawn_epoch = 0
        self._printed = ""
        self.widget, self.display = widget, display
        self.html: Any = None  # shown at the first value: a cell that logs nothing shows no chart
        self.handle: Any = None

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.html._repr_mimebundle_(**kwargs) or {}) if self.html is not None else {}
        bundle["text/plain"] = f"rapha: {self.series.line(self.epoch)}"
        return bundle

    def logged(self, metrics: dict[str, float], epoch: int) -> None:
        self.epoch = max(self.epoch, epoch)
        self.series.add(metrics, epoch)
        now = self.clock()
        recent = self._drawn_at is not None and now - self._drawn_at < REDRAW_SECONDS
        if epoch == self._drawn_epoch and recent:
            return
        self._draw(now)

    def finish(self) -> None:
        if self.series.curve() is not None:
            self._draw(self.clock(), final=True)

    def _draw(self, now: float, final: bool = False) -> None:
        self._drawn_at, curve = now, self.series.curve()
        if curve is None:
            return
        if not self.widget:
            text = f"rapha: {self.series.line(self.epoch)}"
            if (self.epoch != self._drawn_epoch or final) and text != self._printed:  # a line per epoch
                self.stream.write(text + "\n")
                self.stream.flush()
                self._printed = text
        else:
            name, values, xs, x_label = curve
            html = svg_curve(name, values, xs, x_label=x_label)
            if self.html is None:
                import ipywidgets as widgets  # type: ignore[import-untyped]

                self.html = widgets.HTML(value=html)
                self.handle = _display(self, self.display)
            self.html.value = html
            if final and self.handle is not None:
                self.handle.update(self)  # the saved text form brought up to date
        self._drawn_epoch = self.epoch


def _display(view: Any, display: Callable[..., Any] | None) -> Any:
    if display is not None:
        return display(view, display_id=True)
    from IPython.display import display as ipython_display

    return ipython_display(view, display_id=True)  # type: ignore[no-untyped-call]
