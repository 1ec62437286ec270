"""Under load from many concurrent clients while a job trains, every read-only request
is answered (no 5xx, no dropped connection) and the job still completes, exactly once.
Timings belong to benchmarks/bench_load.py; nothing here is timed."""

from __future__ import annotations

import sqlite3

import pytest

from jupyter_rapha.client import EdgeClient
from tests.loadgen import run_load, start_training

pytestmark = pytest.mark.slow


def audit_events(edge, job_id: str) -> list[str]:
    db = sqlite3.connect(edge.config / "state" / "edge.sqlite")
    try:
        return [r[0] for r in db.execute("SELECT event FROM audit WHERE job_id=? ORDER BY seq", (job_id,))]
    finally:
        db.close()


def test_read_only_routes_all_answer_while_a_job_trains_and_the_job_completes_once(demo_edge):
    edge, key = demo_edge
    client = EdgeClient(edge.url, key)
    job_id = start_training(client, key, seconds=20)
    routes = {"catalog": "/v1/catalog", "status": f"/v1/jobs/{job_id}", "events": f"/v1/jobs/{job_id}/events",
              "jobs": "/v1/jobs"}
    result = run_load(edge.url, key, routes, clients=150, seconds=4)
    assert client.status(job_id)["state"] == "running"  # the load ran while the job trained
    assert result.non_2xx() == {} and not result.failures, (result.statuses, result.failures, edge.log()[-3000:])
    counts = {n: len(v) for n, v in result.latencies_ms.items()}
    assert all(counts.get(name, 0) > 0 for name in routes), counts

    status = client.wait(job_id, poll=0.5, timeout=180)
    assert status["state"] == "completed", (status["reasons"], edge.log()[-3000:])
    events = audit_events(edge, job_id)
    assert events.count("job.run") == 1 and events.count("job.complete") == 1, events
    states = [e["data"].get("state") for e in client.events(job_id)["events"] if e["kind"] == "state"]
    assert states == ["submitted", "running", "held", "completed"], states  # held while its outputs were checked
    assert client.metrics(job_id)["steps"][-1] > 0
