"""An edge that stops answering: its jobs stay listed as last seen and marked, the other
edges' jobs are unaffected, and the notebook's progress says so instead of "running"."""

from __future__ import annotations

import io
import time

import pytest

from jupyter_rapha.gateways import in_process
from jupyter_rapha.progress import ProgressLine, collect_watched
from jupyter_rapha.protocol.errors import Fault
from jupyter_rapha.training import TrainRequest, submission_for
from tests.edge.test_cancel import LONG
from tests.harness import init_edge, start_edge

pytestmark = pytest.mark.slow


def test_a_job_whose_edge_stops_answering_is_listed_as_last_seen(tmp_path):
    key = init_edge(tmp_path / "edge", records=32)
    edge = start_edge(tmp_path / "edge")
    try:
        proxy = in_process(edge.url, key)
        [job] = proxy.submit(submission_for(TrainRequest(code=LONG, dataset="synthetic-cxr", budget=32, epochs=100,
                                                         max_seconds=120)))
        deadline = time.monotonic() + 90
        while proxy.status(job["job_id"])["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        [listed] = proxy.jobs()
        assert listed["state"] == "running" and "edge_unreachable" not in listed and proxy.unreachable == {}
    finally:
        edge.stop()
    [stale] = proxy.jobs()
    assert stale["edge_unreachable"] is True and stale["state"] == "running" and stale["last_seen"]
    assert list(proxy.unreachable) == [job["site"]] and "cannot reach the edge" in proxy.unreachable[job["site"]]

    stream = io.StringIO()
    view = ProgressLine(job["job_id"], job["site"], 100, stream=stream)
    with pytest.raises(Fault):
        collect_watched(proxy, job["job_id"], view)
    assert "edge unreachable (last seen: queued at the edge)" in stream.getvalue().splitlines()[-1]
