"""The release path's claim survives the edge being killed between queuing the receipt's
anchor and queuing its claim: the restarted edge resumes the release, claims once, and the
released receipt carries the claim."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.escrow_client import EscrowRpc
from tests.harness import start_edge, stop_process

from .test_edge_settlement import READ, UNITS, settled_edge

pytestmark = pytest.mark.slow

CRASH = ("import os, signal\ndef crash(*args, **kwargs):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
         "import edge_kernel.jobs\nedge_kernel.jobs.JobManager._queue_claim = crash\n")


def test_killed_between_the_anchor_and_the_claim_the_restart_claims_once(tmp_path):
    root = tmp_path / "edge"
    key = settled_edge(root)
    edge = start_edge(root, preload=CRASH)
    try:
        client = EdgeClient(edge.url, key)
        spec = make_jobspec(READ, "synthetic-cxr", ["image"], 40, 120, {}, key.key_id)
        client.submit(spec)
        assert edge.process.wait(timeout=180) == -signal.SIGKILL  # killed itself at the claim
    finally:
        stop_process(edge.process, signal.SIGKILL)
    with sqlite3.connect(root / "state" / "edge.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM escrow_claims").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM anchor_outbox").fetchone() == (1,)

    edge = start_edge(root)
    try:
        client = EdgeClient(edge.url, key)
        assert client.status(spec.job_id)["state"] == "completed"
        deadline = time.monotonic() + 60
        while "settlement_claim" not in client.receipt(spec.job_id) and time.monotonic() < deadline:
            time.sleep(0.3)
        claim = client.receipt(spec.job_id)["settlement_claim"]
        used = client.status(spec.job_id)["progress"]["records_used"]
        assert (claim["records"], claim["paid_units"]) == (used, used * UNITS)
        escrow = EscrowRpc(edge.url + "/chain", client.edge_info()["settlement"]["contract"])
        entry = escrow.lock_of(spec.job_id)
        assert (entry["state"], entry["records"]) == ("claimed", used)
    finally:
        edge.stop()
    with sqlite3.connect(root / "state" / "edge.sqlite") as db:  # one claim, mined and published
        assert db.execute("SELECT state, published FROM escrow_claims").fetchall() == [("mined", "done")]
