"""Live progress of a job in the notebook, fed by the job's event stream.

A widget (records and epochs as progress bars, latest metrics, state) where widgets render:
a Jupyter kernel with ipywidgets. Elsewhere (plain IPython, papermill logs, `rapha run`)
one text line per state change and per epoch. Events carry only states, counters and
finite numbers, and everything shown is escaped.
"""

from __future__ import annotations

import os
from html import escape
from typing import Any

TEXT_ENV = "RAPHA_PROGRESS"  # "text" forces the text line


class ProgressLine:
    def __init__(self, job_id: str, site: str = "") -> None:
        self.prefix = f"rapha: job {job_id[:8]}" + (f" at {site}" if site else "")
        self.states: list[str] = []
        self.epochs = -1
        self.metrics: dict[str, float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        data = event.get("data", {})
        if event.get("kind") == "state":
            self.states.append(str(data.get("state")))
            print(f"{self.prefix} {' -> '.join(self.states)}", flush=True)
        elif event.get("kind") == "progress" and int(data.get("epochs", 0)) != self.epochs:
            self.epochs = int(data.get("epochs", 0))
            print(f"{self.prefix} epoch {self.epochs}: {data.get('records_used', 0)}/{data.get('cohort_size', '?')}"
                  " records", flush=True)
        elif event.get("kind") == "metrics":
            self.metrics.update({k: v for k, v in data.items() if isinstance(v, (int, float))})
            print(f"{self.prefix} {_metrics_text(self.metrics)}", flush=True)


class ProgressWidget:
    def __init__(self, job_id: str, site: str = "", epochs: int = 1) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self.title = f"job {escape(job_id[:8])}" + (f" at {escape(site)}" if site else "")
        self.records = widgets.IntProgress(value=0, min=0, max=1, description="records")
        self.epochs = widgets.IntProgress(value=0, min=0, max=max(epochs, 1), description="epochs")
        self.label = widgets.HTML(value=f"<b>{self.title}</b>: waiting")
        self.state, self.metrics = "submitted", {}
        self.box = widgets.VBox([self.label, self.records, self.epochs])
        display(self.box)

    def __call__(self, event: dict[str, Any]) -> None:
        data, kind = event.get("data", {}), event.get("kind")
        if kind == "state":
            self.state = str(data.get("state"))
        if "cohort_size" in data:
            self.records.max = max(int(data["cohort_size"]), 1)
        if "records_used" in data:
            self.records.value = int(data["records_used"])
        if "epochs" in data:
            self.epochs.value = min(int(data["epochs"]), self.epochs.max)
        if kind == "metrics":
            self.metrics.update({k: v for k, v in data.items() if isinstance(v, (int, float))})
        self.label.value = (f"<b>{self.title}</b>: {escape(self.state)}"
                            + (f" &middot; {escape(_metrics_text(self.metrics))}" if self.metrics else ""))


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


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


def progress_view(job_id: str, site: str = "", epochs: int = 1) -> Any:
    return ProgressWidget(job_id, site, epochs) if widgets_render() else ProgressLine(job_id, site)
