"""Live progress of a job, fed by the job's event stream: what tqdm or W&B would show.

``JobProgress`` is the model: it reads the edge's events (states, counters, metric
values) and says which epoch of how many, how many records of the cohort, how many
batches, the last value of each metric, the time elapsed and an ETA, and the job's state
in words. Two views draw it: ``ProgressWidget`` (labelled bars with numbers, a loss chart
with axes) in a Jupyter kernel with ipywidgets, and ``ProgressLine`` (text lines: plain
IPython, papermill or nbclient logs, ``rapha run`` in a terminal). Events carry only
states, counters and finite numbers, and everything shown is escaped.

The loss chart is drawn from released values only. A metric value is a number that
leaves the edge, so it leaves once the release checks have passed (S5: outputs are held at
the edge until the disclosure checks and, where policy says, output checkers release
them): the edge sends a ``metrics`` event only at release, and ``finish`` draws the released
series whole, on labelled axes (epoch, or step, against the metric). There is deliberately
no live stream of values while a job runs or is held: progress shows the counts the meter
releases (epoch k/N, records k/N, batches, elapsed, ETA) and the chart says "loss is
released after the output checks". A ``--local`` dry run, which touches nothing at an
edge, draws its loss live instead (``local_chart.py``).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any, TextIO
from collections.abc import Callable

from .protocol.contract import PRIVACY_PROGRESS, TERMINAL_STATES, JobState
from .receipt_chart import curve_line, x_label_for

if TYPE_CHECKING:
    from .gateway import Gateway

TEXT_ENV = "RAPHA_PROGRESS"  # "text" forces the text line

# What each state means to the researcher; the edge's word is kept in brackets where it differs.
STATE_TEXT: dict[str, str] = {
    JobState.SUBMITTED: "queued at the edge", JobState.RUNNING: "running",
    JobState.AWAITING_APPROVAL: "awaiting approval by the hospital's data stewards before it runs",
    JobState.HELD: "ran; outputs held at the edge for release checks", JobState.COMPLETED: "completed",
    JobState.REFUSED: "ran; release of the outputs refused", JobState.DENIED: "denied",
    JobState.FAILED: "failed", JobState.CANCELLED: "cancelled",
}
FINAL = TERMINAL_STATES
# A held job's counters (the edge rounds the figures to two decimals before they leave).
HELD_COUNTERS = ("checks_done", "checks_total", "review_needed", "approvals", "approvals_needed",
                 "copies_records_matched", "copies_max_correlation", "mia_auc", "mia_tpr_at_1pct_fpr",
                 "mia_checkable", "parameters_per_record")

# A DP job's privacy budget and, once released, what its trainer spent (from the receipt).
PRIVACY_COUNTERS = PRIVACY_PROGRESS


@dataclass(frozen=True)
class Bar:
    label: str  # "epoch", "records", "batches" ("steps" for a DP job's trainer)
    value: int
    total: int | None  # None: a count with no known end (batches before the first epoch ends)

    def text(self) -> str:
        return f"{self.label} {self.value}/{self.total}" if self.total else f"{self.label} {self.value}"

    @property
    def fraction(self) -> float:
        return min(self.value / self.total, 1.0) if self.total else 0.0


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def clock(seconds: float | None) -> str:
    """0:07, 12:30, 1:02:03 (as tqdm writes durations)."""
    if seconds is None:
        return "?"
    whole = max(int(round(seconds)), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class JobProgress:
    """A job's progress as its events tell it. ``epochs`` is how many it was asked for
    (the cell's --epochs; 0 when unknown, e.g. reattaching to a job)."""

    def __init__(self, job_id: str, site: str = "", epochs: int = 0) -> None:
        self.job_id, self.site = job_id, site
        self.epochs_total = max(int(epochs or 0), 0)
        self.state: str = JobState.SUBMITTED
        self.epoch = 0
        self.records = 0
        self.cohort: int | None = None
        self.batches = 0
        self.metrics: dict[str, float] = {}
        self.history: dict[str, list[tuple[float, float]]] = {}  # name -> (x, value), x = epoch or step
        self.started: datetime | None = None
        self.finished: datetime | None = None
        self.last_seen: datetime | None = None
        self.unreachable = ""  # why the edge stopped answering, once it has
        self.x_label = "epoch"  # live points are per epoch; the released series per logged step
        self._batches_at_epoch: dict[int, int] = {}
        self._first_epoch_batches = 0
        self.checks: dict[str, float] = {}  # a held job's check progress and figures
        # A DP job: the edge's trainer counts its steps (Poisson lots) of the planned total, and
        # its epochs of fit_private's own; the budget is the policy's, the spent the receipt's.
        self.steps = 0
        self.steps_total: int | None = None
        self.privacy: dict[str, float] = {}

    # -- reading events ------------------------------------------------------------------
    def update(self, event: dict[str, Any]) -> None:
        raw = event.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        when = _parse_ts(event.get("ts"))
        self.last_seen = when or self.last_seen
        kind = event.get("kind")
        if kind == "state" and isinstance(data.get("state"), str):
            self._state(data["state"], when)
        if kind in ("state", "progress"):
            self._counters(data)
        elif kind == "metrics":
            self._metrics(data)

    def _state(self, state: str, when: datetime | None) -> None:
        self.state = state
        if state == JobState.RUNNING and self.started is None:
            self.started = when
        if state in FINAL:
            self.finished = when

    def _counters(self, data: dict[str, Any]) -> None:
        for name, attribute in (("records_used", "records"), ("batches", "batches"), ("epochs", "epoch")):
            value = _number(data.get(name))
            if value is not None and value >= 0:
                setattr(self, attribute, int(value))
        cohort = _number(data.get("cohort_size"))
        if cohort is not None and cohort >= 0:
            self.cohort = int(cohort)
        self._trainer_counters(data)
        if self.epoch and self.epoch not in self._batches_at_epoch:
            self._batches_at_epoch[self.epoch] = self.batches
        if self.epoch == 1 and self.cohort and self.records >= self.cohort:
            # Epoch 1 serves each record once, so once all have crossed it is over: exact.
            self._first_epoch_batches = self.batches
        if self.epoch > self.epochs_total and self.epochs_total:
            self.epochs_total = self.epoch  # the cell looped more than it was asked: show what it did
        for name in HELD_COUNTERS:
            value = _number(data.get(name))
            if value is not None:
                self.checks[name] = value

    def _trainer_counters(self, data: dict[str, Any]) -> None:
        steps, steps_total, epochs_total = (_number(data.get(k)) for k in ("steps", "steps_total", "epochs_total"))
        if steps is not None and steps >= 0:
            self.steps = int(steps)
        if steps_total is not None and steps_total > 0:
            self.steps_total = int(steps_total)
        if epochs_total is not None and epochs_total > 0:
            self.epochs_total = int(epochs_total)  # fit_private's epochs, not the cell's --epochs
        for name in PRIVACY_COUNTERS:
            value = _number(data.get(name))
            if value is not None and value >= 0:
                self.privacy[name] = value

    def privacy_text(self) -> str:
        """"epsilon 7.99 spent of 8 (delta 0.001)", or the budget alone before the release."""
        target, spent, delta = (self.privacy.get(k) for k in PRIVACY_COUNTERS)
        if target is None:
            return ""
        said = f"epsilon {spent:.4g} spent of {target:.3g}" if spent is not None else f"epsilon budget {target:.3g}"
        return said + (f" (delta {delta:.3g})" if delta is not None else "")

    def _metrics(self, data: dict[str, Any]) -> None:
        for name, raw in data.items():
            value = _number(raw)
            if value is None or not isinstance(name, str):
                continue
            self.metrics[name] = value
            series = self.history.setdefault(name, [])
            series.append((float(self.epoch or len(series) + 1), value))

    def set_series(self, metrics: dict[str, Any]) -> None:
        """The released metrics, whole, once the job completed: the chart's final curve."""
        for name, values in (metrics or {}).items():
            if isinstance(name, str) and isinstance(values, list):
                points = [(float(i + 1), v) for i, v in enumerate(_number(x) for x in values) if v is not None]
                if points:
                    self.history[name] = points
                    self.metrics[name] = points[-1][1]
        curve = self.curve()
        self.x_label = x_label_for(len(curve[1]), self.epochs_total) if curve else "step"

    def lost(self, why: str) -> None:
        """The edge (or the server in front of it) stopped answering."""
        self.unreachable = why

    # -- what is shown -------------------------------------------------------------------
    @property
    def final(self) -> bool:
        return self.state in FINAL

    def state_text(self) -> str:
        if self.unreachable and not self.final:
            return f"edge unreachable (last seen: {STATE_TEXT.get(self.state, self.state)})"
        if self.state == JobState.HELD:
            return self._held_text()
        if self.state == JobState.AWAITING_APPROVAL and "approvals_needed" in self.checks:
            return (f"awaiting approval before it runs ({int(self.checks.get('approvals', 0))}/"
                    f"{int(self.checks['approvals_needed'])} data steward approvals)")
        return STATE_TEXT.get(self.state, self.state)

    def _held_text(self) -> str:
        done, total = int(self.checks.get("checks_done", 0)), int(self.checks.get("checks_total", 0))
        if self.checks.get("review_needed"):
            return (f"ran; outputs held for review ({int(self.checks.get('approvals', 0))}/"
                    f"{int(self.checks.get('approvals_needed', 1))} approvals)")
        if total and done < total:
            return f"ran; outputs held: checks running ({done}/{total})"
        return "ran; outputs held: release being decided" if total else "ran; outputs held: checks running"

    def checks_text(self) -> str:
        """The disclosure checks' figures so far, as the edge shows them while it holds."""
        c, parts = self.checks, []
        if "copies_records_matched" in c:
            parts.append(f"record copies {int(c['copies_records_matched'])}"
                         + (f" (max r {c['copies_max_correlation']:.2f})" if "copies_max_correlation" in c else ""))
        if c.get("mia_checkable") == 0:
            parts.append("MIA not checkable")
        elif "mia_auc" in c:
            parts.append(f"MIA AUC {c['mia_auc']:.2f}")
        if "parameters_per_record" in c:
            parts.append(f"{c['parameters_per_record']:.4g} params/record")
        return ", ".join(parts)

    def bars(self) -> list[Bar]:
        bars = [Bar("epoch", self.epoch, self.epochs_total or None),
                Bar("records", self.records, self.cohort or None)]
        if self.steps_total:  # a DP job: the trainer's steps are its batches, counted against the plan
            return [*bars, Bar("steps", self.steps, self.steps_total)]
        per_epoch = self._batches_per_epoch()
        total = per_epoch * self.epochs_total if per_epoch and self.epochs_total else None
        if self.final and self.state == JobState.COMPLETED:
            total = self.batches  # done: whatever it served is the whole
        bars.append(Bar("batches", self.batches, total if total and total >= self.batches else None))
        return bars

    def _batches_per_epoch(self) -> int | None:
        # Exact when an update came at the end of epoch 1; else estimated from the first
        # update of a later epoch (updates are throttled, so that one may come late).
        if self._first_epoch_batches:
            return self._first_epoch_batches
        later = [(e, b) for e, b in self._batches_at_epoch.items() if e >= 2 and b > 0]
        if later:
            epoch, batches = min(later)
            return max(round(batches / (epoch - 1)), 1)
        return None

    def fraction(self) -> float | None:
        """How much of the job is done, 0..1, or None before anything is known."""
        if self.state == JobState.COMPLETED:
            return 1.0
        if self.steps_total:
            return min(self.steps / self.steps_total, 1.0)
        if not self.epochs_total or not self.epoch:
            return None
        per_epoch = self._batches_per_epoch()
        if self.epoch == 1 or per_epoch is None:
            within = (self.records / self.cohort) if self.cohort else 0.0
        else:
            within = (self.batches - per_epoch * (self.epoch - 1)) / per_epoch
        return min(max((self.epoch - 1 + min(max(within, 0.0), 1.0)) / self.epochs_total, 0.0), 1.0)

    def elapsed(self, now: datetime | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.finished or now or datetime.now(UTC)
        return max((end - self.started).total_seconds(), 0.0)

    def eta(self, now: datetime | None = None) -> float | None:
        done, elapsed = self.fraction(), self.elapsed(now)
        if self.final:
            return 0.0 if self.state == JobState.COMPLETED else None
        if done is None or elapsed is None or done < 0.01 or self.unreachable or self.state == JobState.HELD:
            return None
        return elapsed * (1 - done) / done

    def metrics_text(self) -> str:
        return ", ".join(f"{k}={v:.4g}" for k, v in sorted(self.metrics.items()))

    def timing_text(self, now: datetime | None = None) -> str:
        elapsed = self.elapsed(now)
        if elapsed is None:
            return ""
        if self.final or self.state == JobState.HELD:
            # held: training is over; the release checks (or an output checker) take what they take
            return f"{clock(elapsed)} elapsed"
        eta = self.eta(now)
        return f"{clock(elapsed)} elapsed, ETA {clock(eta) if eta is not None else '?'}"

    def title(self) -> str:
        return f"job {self.job_id[:8]}" + (f" at {self.site}" if self.site else "")

    def line(self, now: datetime | None = None) -> str:
        """One tqdm-like line: state, the bars with their numbers, the metrics, the time."""
        parts = [self.title(), self.state_text()]
        if self.state != JobState.SUBMITTED or self.records:
            parts += [bar.text() for bar in self.bars()]
        if self.metrics:
            parts.append(self.metrics_text())
        if self.privacy_text():
            parts.append(self.privacy_text())
        if self.state in (JobState.HELD, JobState.REFUSED, JobState.COMPLETED) and self.checks_text():
            parts.append(self.checks_text())
        timing = self.timing_text(now)
        if timing:
            parts.append(timing)
        return " | ".join(parts)

    def curve(self) -> tuple[str, list[tuple[float, float]]] | None:
        """The series to chart: ``loss`` if it came, else the first name holding "loss"."""
        names = (["loss"] if "loss" in self.history else []) + sorted(n for n in self.history if "loss" in n.lower())
        for name in names:
            if self.history[name]:
                return name, self.history[name]
        return None


class ProgressLine:
    """Text progress: one line per state change, per epoch and per metrics update; on a
    terminal the running line is rewritten in place, as tqdm does."""

    def __init__(self, job_id: str, site: str = "", epochs: int = 0, stream: TextIO | None = None,
                 prefix: str = "rapha") -> None:
        self.model = JobProgress(job_id, site, epochs)
        self.stream = stream if stream is not None else sys.stdout
        self.prefix = prefix
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._said: tuple[Any, ...] = ()
        self._open = False

    def __call__(self, event: dict[str, Any]) -> None:
        self.model.update(event)
        self.show()

    def show(self) -> None:
        model = self.model
        key = (model.state, model.epoch, tuple(sorted(model.metrics.items())), model.unreachable,
               tuple(sorted(model.checks.items())))
        if self.live and not model.final:
            self._write("\r\033[K" + self._text(), end="")
            self._open = True
        elif key != self._said:
            self._write(("\r\033[K" if self._open else "") + self._text())
            self._open = False
        self._said = key

    def finish(self, metrics: dict[str, Any] | None = None) -> None:
        if self._open:
            self._write("")
            self._open = False
        if metrics:
            self.model.set_series(metrics)
            curve = self.model.curve()
            if curve is not None:  # the released series, whole: the text form of the chart
                self._write(f"{self.prefix}: {curve_line(curve[0], [v for _, v in curve[1]], self.model.x_label)}")

    def lost(self, why: str) -> None:
        self.model.lost(why)
        self.show()
        self.finish()

    def _text(self) -> str:
        return f"{self.prefix}: {self.model.line()}"

    def _write(self, text: str, end: str = "\n") -> None:
        self.stream.write(text + end)
        self.stream.flush()


_BAR_STYLE: dict[str, str] = {JobState.COMPLETED: "success", JobState.REFUSED: "danger", JobState.DENIED: "danger",
                              JobState.FAILED: "danger", JobState.CANCELLED: "warning", JobState.HELD: "info"}
_STATE_COLOUR: dict[str, str] = {JobState.COMPLETED: "#1a7f37", JobState.REFUSED: "#cf222e",
                                 JobState.DENIED: "#cf222e", JobState.FAILED: "#cf222e",
                                 JobState.CANCELLED: "#9a6700", JobState.HELD: "#0969da"}


class ProgressWidget:
    """Labelled bars with their numbers, the state in words, the last metrics, elapsed and
    ETA, and the loss chart with axes, updated as events arrive. Its plain-text form (what
    a headless run such as nbclient saves) is the same one line ``ProgressLine`` prints."""

    def __init__(self, job_id: str, site: str = "", epochs: int = 0,
                 display: Callable[..., Any] | None = None) -> None:
        import ipywidgets as widgets  # type: ignore[import-untyped]

        self.model = JobProgress(job_id, site, epochs)
        self.header = widgets.HTML()
        self.rows: dict[str, tuple[Any, Any]] = {}
        for label in ("epoch", "records", "batches"):
            bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description=label,
                                        style={"description_width": "64px"}, layout={"width": "320px"})
            self.rows[label] = (bar, widgets.Label(value=""))
        self.footer = widgets.HTML()
        self.chart = widgets.HTML()
        self.box = widgets.VBox([self.header, *(widgets.HBox(list(row)) for row in self.rows.values()),
                                 self.footer, self.chart])
        self.handle = _display(self, display)
        self.show()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.box._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = f"rapha: {self.model.line()}"
        return bundle

    def __call__(self, event: dict[str, Any]) -> None:
        before = (self.model.state, self.model.epoch, len(self.model.history))
        self.model.update(event)
        self.show(chart=before != (self.model.state, self.model.epoch, len(self.model.history)))

    def show(self, chart: bool = True) -> None:
        model = self.model
        colour = _STATE_COLOUR.get(model.state, "#57606a" if not model.unreachable else "#9a6700")
        self.header.value = (f"<b>{escape(model.title())}</b>: "
                             f"<span style='color:{colour};font-weight:bold'>{escape(model.state_text())}</span>")
        for (widget, number), bar in zip(self.rows.values(), model.bars(), strict=True):
            widget.description = bar.label  # a DP job's third bar counts the trainer's steps
            widget.value = bar.fraction if bar.total else 0.0
            widget.bar_style = _BAR_STYLE.get(model.state, "")
            number.value = f"{bar.value}/{bar.total}" if bar.total else str(bar.value)
        pieces = [escape(model.metrics_text()), escape(model.privacy_text()), escape(model.checks_text()),
                  escape(model.timing_text())]
        self.footer.value = " &middot; ".join(p for p in pieces if p)
        if chart:
            self.chart.value = _chart_html(model)

    def finish(self, metrics: dict[str, Any] | None = None) -> None:
        """The released metrics drawn whole, and the plain text brought up to date."""
        if metrics:
            self.model.set_series(metrics)
        self.show()
        if self.handle is not None:
            self.handle.update(self)

    def lost(self, why: str) -> None:
        self.model.lost(why)
        self.finish()


def _display(view: Any, display: Callable[..., Any] | None) -> Any:
    if display is not None:
        return display(view, display_id=True)
    from IPython.display import display as ipython_display

    return ipython_display(view, display_id=True)  # type: ignore[no-untyped-call]


def _chart_html(model: JobProgress) -> str:
    from .receipt_chart import pending_html, svg_curve

    curve = model.curve()
    if curve is None:  # while it runs or is held no value has left; after the end, none came
        return "" if model.final or model.unreachable else pending_html()
    name, points = curve
    return svg_curve(name, [v for _, v in points], [x for x, _ in points], x_label=model.x_label)


def widgets_render() -> bool:
    """True in a Jupyter kernel with ipywidgets; False in a terminal or when forced to text."""
    if os.environ.get(TEXT_ENV) == "text":
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress_view(job_id: str, site: str = "", epochs: int = 0) -> Any:
    return ProgressWidget(job_id, site, epochs) if widgets_render() else ProgressLine(job_id, site, epochs)


def collect_watched(gateway: Gateway, job_id: str, view: Any) -> Any:
    """``training.collect`` with ``view`` fed every event, told when the edge stops
    answering before the job ended, and given the released metrics at the end."""
    from .protocol.errors import RaphaError
    from .training import collect

    try:
        result = collect(gateway, job_id, view)
    except RaphaError as exc:
        if view.model.final:
            view.finish()
        else:
            view.lost(exc.message)
        raise
    view.finish(result.metrics)
    return result
