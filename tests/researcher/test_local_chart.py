"""The --local dry run's live loss chart: redrawn as the cell trains (per epoch, on
labelled axes), throttled within an epoch, and a text line per epoch where no widgets run."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest
from IPython.core.interactiveshell import InteractiveShell

from jupyter_rapha.local import make_runtime, run_local
from jupyter_rapha.local_chart import LocalChart, LossSeries
from tests.researcher.fake_edge import SCHEMA

TRAINING = """
import torch
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
loader = rapha.loader(batch_size=4)
for epoch in range(rapha.epochs):
    total = 0.0
    for batch in loader:
        loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        optimiser.zero_grad(); loss.backward(); optimiser.step()
        total += loss.item()
        {per_batch}
    rapha.log(loss=total / len(loader))
rapha.save(model)
"""
SVG = "{http://www.w3.org/2000/svg}"


class Handle:
    def __init__(self) -> None:
        self.bundles: list[dict] = []

    def update(self, view) -> None:
        self.bundles.append(view._repr_mimebundle_())


def _axes(html: str) -> tuple[int, dict[str, str]]:
    root = ET.fromstring(html[:html.index("</svg>") + 6])
    points = root.find(f"{SVG}polyline").get("points").split()
    titles = {e.get("class"): e.text for e in root.iter(f"{SVG}text") if e.get("class") in ("x-label", "y-label")}
    return len(points), titles


def test_the_chart_is_redrawn_after_each_epoch_while_the_cell_trains():
    handle, shown = Handle(), []
    chart = LocalChart(3, widget=True, display=lambda view, display_id: shown.append(view) or handle)
    runtime = make_runtime(SCHEMA, None, 12, {}, 3)
    drawn = []

    def logged(metrics, epoch):  # what the notebook shows at the moment of each rapha.log
        chart.logged(metrics, epoch)
        drawn.append(_axes(chart.html.value))

    runtime.on_log = logged
    outcome = run_local(TRAINING.format(per_batch=""), {}, runtime)
    chart.finish()
    assert drawn == [(n, {"x-label": "epoch", "y-label": "loss"}) for n in (1, 2, 3)]
    assert shown == [chart] and len(outcome.metrics["loss"]) == 3
    assert handle.bundles[-1]["text/plain"].startswith("rapha: local epoch 3/3 | loss ")
    assert "over 3 epochs" in handle.bundles[-1]["text/plain"]


def test_within_an_epoch_redraws_are_throttled_and_a_new_epoch_always_redraws():
    now = [0.0]
    chart = LocalChart(2, widget=True, display=lambda view, display_id: Handle(), clock=lambda: now[0])
    draws = []
    original = chart._draw
    chart._draw = lambda when, final=False: (draws.append((chart.epoch, final)), original(when, final))
    for epoch in (1, 2):
        for _ in range(50):  # a cell logging every batch, all within the same instant
            chart.logged({"loss": 0.5}, epoch)
    now[0] = 10.0
    chart.logged({"loss": 0.4}, 2)  # later within epoch 2: drawn again
    chart.finish()
    assert draws == [(1, False), (2, False), (2, False), (2, True)]
    # 101 values, not one per pass: drawn per logged step
    assert _axes(chart.html.value) == (101, {"x-label": "step", "y-label": "loss"})


def test_two_passes_per_epoch_are_not_called_epochs():
    series = LossSeries(2)
    for epoch in (2, 4):
        series.add({"loss": 0.5, "accuracy": 0.7}, epoch)
    name, values, xs, x_label = series.curve()
    assert (name, values, xs, x_label) == ("loss", [0.5, 0.5], [1.0, 2.0], "step")
    assert LossSeries(1).curve() is None


def test_without_widgets_the_magic_prints_a_line_per_epoch_as_it_trains(capsys):
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_rapha")
    schema = json.dumps(SCHEMA).replace(" ", "")
    outcome = shell.run_cell(f"%%rapha_train --dataset d --budget 12 --epochs 3 --local --schema {schema}\n"
                             + TRAINING.format(per_batch=""))
    assert outcome.error_in_exec is None, outcome.error_in_exec
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("rapha: local epoch")]
    assert [line.split(" | ")[0] for line in lines] == [f"rapha: local epoch {k}/3" for k in (1, 2, 3)]
    assert lines[0].endswith("over 1 epoch") and lines[-1].endswith("over 3 epochs")
    shell.user_ns.pop("_rapha_result", None)


@pytest.mark.parametrize("widget", [True, False])
def test_a_cell_that_logs_no_loss_draws_nothing(widget):
    stream = io.StringIO()
    chart = LocalChart(1, widget=widget, stream=stream, display=lambda view, display_id: Handle())
    chart.logged({"accuracy": 0.9}, 1)
    chart.finish()
    assert chart.html is None and stream.getvalue() == ""


@pytest.mark.slow
def test_in_a_kernel_the_chart_is_a_widget_whose_saved_text_is_the_last_epoch(tmp_path):
    """The magic in a real kernel (nbclient, headless): an ipywidgets chart, displayed once
    and updated in place; the notebook keeps its final text form and the SVG in the widget state."""
    import nbformat
    from nbclient import NotebookClient

    schema = json.dumps(SCHEMA).replace(" ", "")
    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell("%load_ext jupyter_rapha"))
    magic = f"%%rapha_train --dataset d --budget 12 --epochs 3 --local --schema {schema}\n"
    notebook.cells.append(nbformat.v4.new_code_cell(magic + TRAINING.format(per_batch="")))
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=180, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = [o for o in notebook.cells[1].outputs if o["output_type"] == "display_data"
             and "application/vnd.jupyter.widget-view+json" in o["data"]]
    assert len(shown) == 1, notebook.cells[1].outputs
    text = shown[0]["data"]["text/plain"]
    assert text.startswith("rapha: local epoch 3/3 | loss ") and text.endswith("over 3 epochs"), text
    state = json.dumps(notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"])
    assert "rapha-loss" in state and "x-label" in state and ">epoch<" in state
