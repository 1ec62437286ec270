"""Progress of a real job at a demo edge: ``rapha run`` on a terminal's stderr and the
notebook's widget both end at the job's final values (epoch 3/3, records 48/48)."""

from __future__ import annotations

import pytest

from jupyter_rapha.cli import main
from jupyter_rapha.gateways import in_process
from jupyter_rapha.progress import ProgressWidget, collect_watched
from jupyter_rapha.training import TrainRequest, submission_for
from tests.harness import init_edge, start_edge

pytestmark = pytest.mark.slow

CELL = """
import torch
from torch import nn
model = nn.Sequential(nn.Flatten(), nn.Linear(1024, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(rapha.epochs):
    for batch in rapha.loader(batch_size=4, shuffle=True):
        loss = nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        opt.zero_grad(); loss.backward(); opt.step()
    rapha.log(loss=loss.item())
rapha.save(model)
"""


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress") / "edge"
    key = init_edge(root)
    key_path = root.parent / "me.pem"
    key_path.write_bytes(key.to_pem())
    key_path.chmod(0o600)
    running = start_edge(root)
    try:
        yield running, key, key_path
    finally:
        running.stop()


def test_rapha_run_shows_labelled_progress_ending_at_the_final_values(edge, tmp_path, capsys):
    running, _, key_path = edge
    cell = tmp_path / "cell.py"
    cell.write_text(CELL)
    code = main(["run", str(cell), "--edge", running.url, "--dataset", "synthetic-cxr", "--budget", "48",
                 "--epochs", "3", "--key", str(key_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code in (0, 3), err
    lines = [line for line in err.splitlines() if line.startswith("rapha run: job ")]
    assert " | queued at the edge" in lines[0] and any(" | running | epoch 1/3 | " in line for line in lines)
    assert lines[-1].split(" | ")[1:5] == ["completed", "epoch 3/3", "records 48/48", "batches 36/36"]
    assert "loss=" in lines[-1] and "elapsed" in lines[-1]


def test_the_notebook_widget_follows_a_real_job_to_its_final_values(edge):
    running, key, _ = edge
    gateway = in_process(running.url, key)
    request = TrainRequest(code=CELL, dataset="synthetic-cxr", budget=48, epochs=3)
    [job] = gateway.submit(submission_for(request))
    updates = []

    class Handle:
        def update(self, view):
            updates.append(view._repr_mimebundle_()["text/plain"])

    widget = ProgressWidget(job["job_id"], job["site"], 3, display=lambda view, display_id: Handle())
    result = collect_watched(gateway, job["job_id"], widget)
    assert {label: number.value for label, (_, number) in widget.rows.items()} == \
        {"epoch": "3/3", "records": "48/48", "batches": "36/36"}
    assert len(result.metrics["loss"]) == 3 and f"loss={result.metrics['loss'][-1]:.4g}" in widget.footer.value
    assert "x-tick" in widget.chart.value and ">epoch<" in widget.chart.value  # one released value per epoch
    assert updates and " | completed | epoch 3/3 | records 48/48 | " in updates[-1]
