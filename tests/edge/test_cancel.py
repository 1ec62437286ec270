"""DELETE /v1/jobs/{id} against a real edge: a cancelled job is ``cancelled`` everywhere
(its status, its event stream, the client's wait, the proxy's follow, the cell's error),
never "failed", and a job that already ended keeps its state."""

from __future__ import annotations

import time

import pytest

from jupyter_rapha.client import EdgeClient, JobCancelled, final_error, make_jobspec
from jupyter_rapha.gateways import in_process
from jupyter_rapha.magic import error_lines
from jupyter_rapha.training import collect
from tests.harness import complete_job, init_edge, start_edge

pytestmark = pytest.mark.slow

# The most epochs the demo policy allows, of real work: it runs until it is cancelled.
LONG = ("import torch\nfor epoch in range(rapha.epochs):\n    for b in rapha.loader(batch_size=1):\n"
        "        for _ in range(5):\n            torch.mm(torch.ones(400, 400), torch.ones(400, 400))\n"
        "rapha.save({'w': torch.zeros(2)})\n")
QUICK = "import torch\nfor b in rapha.loader(batch_size=4):\n    pass\nrapha.save({'w': torch.zeros(2)})\n"


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("cancel") / "edge"
    key = init_edge(root, records=32)
    running = start_edge(root)
    try:
        yield running, key
    finally:
        running.stop()


def submit(client, key, code=LONG, epochs=100):
    return client.submit(make_jobspec(code, "synthetic-cxr", ["image"], 32, 120, {"epochs": epochs}, key.key_id))


def wait_until_training(client, job_id, timeout=90):
    """Running, and its first records read."""
    deadline = time.monotonic() + timeout
    while (status := client.status(job_id))["state"] != "running" or not status["progress"].get("records_used"):
        assert status["state"] in ("submitted", "running"), status
        assert time.monotonic() < deadline, f"job still {status['state']} with {status['progress']}"
        time.sleep(0.1)


def test_a_running_job_ends_cancelled_and_a_queued_one_at_once(edge):
    running_edge, key = edge
    client = EdgeClient(running_edge.url, key)
    first = submit(client, key)
    queued = submit(client, key)  # one worker: this one waits behind the first
    wait_until_training(client, first)
    answer = client.cancel(queued)
    assert answer["state"] == "cancelled" and answer["reasons"] == ["cancelled by the researcher"]
    client.cancel(first)
    status = client.wait(first, poll=0.1, timeout=60)
    assert status["state"] == "cancelled" and status["reasons"] == ["cancelled by the researcher"]
    assert status["progress"]["records_used"] > 0  # it had run; its counters are kept
    for job_id in (first, queued):
        states = [e["data"]["state"] for e in client.events(job_id)["events"] if e["kind"] == "state"]
        assert states[-1] == "cancelled" and "failed" not in states, states
        assert isinstance(final_error(client.status(job_id)), JobCancelled)
    assert client.status(queued)["gates"] == []  # it never reached its gates


def test_the_proxy_follows_a_cancelled_job_to_its_end_and_the_cell_says_cancelled(edge):
    running_edge, key = edge
    gateway = in_process(running_edge.url, key)
    client = EdgeClient(running_edge.url, key)
    job_id = submit(client, key)
    wait_until_training(client, job_id)
    assert gateway.cancel(job_id)["site"]
    seen = []
    with pytest.raises(JobCancelled) as caught:
        collect(gateway, job_id, seen.append)
    assert [e["data"]["state"] for e in seen if e["kind"] == "state"][-1] == "cancelled"
    [line] = error_lines(caught.value)
    assert "cancelled" in line and "failed" not in line


def test_cancelling_a_finished_job_changes_nothing(edge):
    running_edge, key = edge
    client = EdgeClient(running_edge.url, key)
    job_id = complete_job(client, key, QUICK, budget=32)
    assert client.cancel(job_id)["state"] == "completed"
    assert client.status(job_id)["state"] == "completed"
