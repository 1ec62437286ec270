"""A real edge (`rapha-edge serve`, the real sandbox) killed or stopped at the worst
moments: its job never outlives it, a restart cleans up what a crash left, a release
once written is finished on restart (and anchored once), and SIGTERM stops it cleanly.

Crash points are a test's monkeypatch in the edge process (``start_edge(preload=...)``):
the edge's own code carries no test hook."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_kernel.jobs import CUT_OFF
from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.protocol.receipt import sha256_hex
from tests.harness import RunningEdge, complete_job, init_edge, start_edge, stop_process
from tests.processes import descendants, survivors

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_airgap, pytest.mark.slow]

# Reads its records, says so through a file the test can see, then stays.
LINGERING_CELL = ("import time\nfor batch in rapha.loader(batch_size=4):\n    pass\n"
                  "open('reached', 'w').write('1')\ntime.sleep(120)\n")
CELL = ("import torch\nfor batch in rapha.loader(batch_size=4):\n    pass\n"
        "rapha.log(loss=0.5)\nrapha.save({'w': torch.zeros(2)})\n")
CRASH = "import os, signal\ndef crash(*args, **kwargs):\n    os.kill(os.getpid(), signal.SIGKILL)\n"


def edge_at(tmp_path: Path, *, unsafe_no_airgap: bool = False):
    root = tmp_path / "edge"
    key = init_edge(root, records=32)
    if unsafe_no_airgap:
        toml = root / "edge.toml"
        text = toml.read_text()
        assert "[sandbox]\n" in text
        toml.write_text(text.replace("[sandbox]\n", "[sandbox]\nunsafe_no_airgap = true\n", 1))
    return root, key


def submit(client: EdgeClient, key, code: str, budget: int = 8) -> str:
    return client.submit(make_jobspec(code, "synthetic-cxr", ["image"], budget, 300, {"epochs": 1}, key.key_id))


def wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def audit_kinds(root: Path, job_id: str | None = None) -> list[str]:
    with sqlite3.connect(f"file:{root / 'state' / 'edge.sqlite'}?mode=ro", uri=True) as db:
        if job_id is None:
            return [r[0] for r in db.execute("SELECT event FROM audit ORDER BY seq")]
        return [r[0] for r in db.execute("SELECT event FROM audit WHERE job_id=? ORDER BY seq", (job_id,))]


def outbox_rows(root: Path, job_id: str) -> int:
    with sqlite3.connect(f"file:{root / 'state' / 'edge.sqlite'}?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM anchor_outbox WHERE job_id=?", (job_id,)).fetchone()[0]


def lingering_job(edge: RunningEdge, client: EdgeClient, key) -> tuple[str, set]:
    """A job whose cell is running; returns it and every process below the edge."""
    job_id = submit(client, key, LINGERING_CELL)
    reached = edge.config / "state" / "jobs" / job_id / "work" / "reached"

    def cell_reached() -> bool:
        status = client.status(job_id)
        assert status["state"] in ("submitted", "running"), (status, edge.log()[-3000:])
        return reached.exists()

    wait_for(cell_reached, "the cell to read its records")
    wait_for(lambda: client.status(job_id)["progress"].get("records_used") == 8, "the count to be stored", 10)
    processes = descendants(edge.process.pid)
    assert processes, "the job runs in processes below the edge"
    return job_id, processes


@pytest.mark.parametrize("mode", ["airgap", "unsafe_no_airgap"])
def test_kill_9_during_a_job_leaves_nothing_running_and_the_restart_cleans_up(tmp_path, mode):
    root, key = edge_at(tmp_path, unsafe_no_airgap=mode == "unsafe_no_airgap")
    edge = start_edge(root)
    try:
        client = EdgeClient(edge.url, key)
        job_id, processes = lingering_job(edge, client, key)
        edge.process.send_signal(signal.SIGKILL)  # no shutdown path runs
        edge.process.wait(timeout=10)
        # Every process of the job (rapha-airgap, the namespace's init, the cell) is gone.
        assert survivors(processes) == set()
        assert (root / "state" / "jobs" / job_id / "work").exists()  # what the crash left

        edge = start_edge(root)
        client = EdgeClient(edge.url, key)
        status = client.status(job_id)
        assert status["state"] == "failed" and status["reasons"] == [CUT_OFF]
        assert status["progress"]["records_used"] == 8  # what it had read stays counted
        assert not (root / "state" / "jobs" / job_id).exists()  # its stdout may hold record data
        assert "job.fail" in audit_kinds(root, job_id)
        # The next job runs alone: nothing of the first one is left to overlap it.
        complete_job(client, key, CELL)
    finally:
        edge.stop()


@pytest.mark.parametrize("crash_at", [
    "edge_kernel.jobs.JobManager._complete",        # release written, receipt not yet queued
    "edge_kernel.anchor.outbox.Outbox.wait_anchored",  # receipt queued in the outbox
])
def test_kill_9_after_signing_finishes_the_release_on_restart(tmp_path, crash_at):
    root, key = edge_at(tmp_path)
    module, owner, name = crash_at.rsplit(".", 2)
    edge = start_edge(root, preload=f"{CRASH}import {module}\n{module}.{owner}.{name} = crash\n")
    try:
        job_id = submit(EdgeClient(edge.url, key), key, CELL, budget=4)
        assert edge.process.wait(timeout=180) == -signal.SIGKILL  # killed itself at the crash point
    finally:
        stop_process(edge.process, signal.SIGKILL)
    assert "receipt.sign" in audit_kinds(root, job_id) and "job.complete" not in audit_kinds(root, job_id)

    edge = start_edge(root)
    try:
        client = EdgeClient(edge.url, key)
        status = client.status(job_id)
        assert status["state"] == "completed", status
        wait_for(lambda: client.receipt(job_id)["anchor"].get("method") == "evm-batch", "the anchor", 60)
        receipt, weights, metrics = client.receipt(job_id), client.weights(job_id), client.metrics(job_id)
        predicate = json.loads(__import__("base64").b64decode(receipt["envelope"]["payload"]))["predicate"]
        assert predicate["outputs"]["weights"]["sha256"] == sha256_hex(weights) and metrics == {"loss": [0.5]}
        assert status["progress"]["records_used"] == predicate["dataset"]["records_used"] == 4
        # What the researcher fetches is what was anchored: it verifies against the chain.
        out = tmp_path / "out"
        out.mkdir()
        (out / "receipt.json").write_text(json.dumps(receipt))
        (out / "weights.safetensors").write_bytes(weights)
        (out / "metrics.json").write_text(json.dumps(metrics))
        (out / "edge.pub").write_text(client.edge_info()["public_key"])
        verified = subprocess.run([sys.executable, "-m", "jupyter_rapha.cli", "verify", str(out / "receipt.json"),
                                   "--rpc", edge.url + "/chain"], capture_output=True, text=True, timeout=120)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert outbox_rows(root, job_id) == 1  # queued once, so anchored once
        assert "release.resume" in audit_kinds(root, job_id)
    finally:
        edge.stop()


def test_kill_9_before_the_outputs_are_held_fails_the_job_and_anchors_nothing(tmp_path):
    root, key = edge_at(tmp_path)
    edge = start_edge(root, preload=f"{CRASH}import edge_kernel.held_jobs\nedge_kernel.held_jobs.write_held = crash\n")
    try:
        job_id = submit(EdgeClient(edge.url, key), key, CELL, budget=4)
        assert edge.process.wait(timeout=180) == -signal.SIGKILL
    finally:
        stop_process(edge.process, signal.SIGKILL)
    assert "job.hold" not in audit_kinds(root, job_id)

    edge = start_edge(root)
    try:
        client = EdgeClient(edge.url, key)
        status = client.status(job_id)
        assert status["state"] == "failed" and status["reasons"] == [CUT_OFF]
        assert outbox_rows(root, job_id) == 0  # no receipt is anchored that nobody can fetch
        assert not (root / "state" / "jobs" / job_id).exists()
    finally:
        edge.stop()


def test_kill_9_after_holding_but_before_the_release_is_written_releases_it_on_restart(tmp_path):
    """Once held, a crash loses nothing: the held outputs and the decision kept beside them
    are released after the restart, signed and anchored once."""
    root, key = edge_at(tmp_path)
    edge = start_edge(root, preload=f"{CRASH}import edge_kernel.release.releaser\n"
                                    "edge_kernel.release.releaser.write_release = crash\n")
    try:
        job_id = submit(EdgeClient(edge.url, key), key, CELL, budget=4)
        assert edge.process.wait(timeout=180) == -signal.SIGKILL
    finally:
        stop_process(edge.process, signal.SIGKILL)
    assert "receipt.sign" in audit_kinds(root, job_id) and "release.decide" in audit_kinds(root, job_id)

    edge = start_edge(root)
    try:
        client = EdgeClient(edge.url, key)
        status = client.wait(job_id, timeout=120)
        assert status["state"] == "completed", status
        assert client.metrics(job_id) == {"loss": [0.5]}
        assert audit_kinds(root, job_id).count("release.checks_start") == 1  # its checks.json was kept
        wait_for(lambda: outbox_rows(root, job_id) == 1, "the anchor queued once", 60)
        assert not (root / "state" / "jobs" / job_id / "held").exists()
    finally:
        edge.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_the_edge_cleanly(tmp_path, signum):
    root, key = edge_at(tmp_path)
    edge = start_edge(root)
    try:
        client = EdgeClient(edge.url, key)
        job_id, processes = lingering_job(edge, client, key)
        edge.process.send_signal(signum)
        assert edge.process.wait(timeout=60) == 0, edge.log()[-2000:]
        assert survivors(processes, timeout=0) == set()
        assert audit_kinds(root)[-1] == "edge.stop"
    finally:
        stop_process(edge.process, signal.SIGKILL)

    edge = start_edge(root)
    try:
        status = EdgeClient(edge.url, key).status(job_id)
        assert status["state"] == "failed" and status["reasons"] == [CUT_OFF]
    finally:
        edge.stop()
