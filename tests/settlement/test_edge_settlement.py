"""One real edge with settlement on (`rapha-edge init --demo --settlement`): a researcher
registered with their chain account locks through the edge's /chain at submit, the job
runs, the released receipt carries the escrow claim of exactly the records the signed meter
counted, and `rapha verify --rpc` checks it on chain; a job denied at the gates gets its
whole lock back; a researcher with no lock is refused before the job runs."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from edge_kernel.cli import main as edge_cli
from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.escrow_client import EscrowRpc
from jupyter_rapha.keystore import create_key, ensure_chain_account
from jupyter_rapha.protocol.escrow import job_key
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.verify import verify_receipt_file
from tests.harness import start_edge

pytestmark = pytest.mark.slow

READ = "import torch\nfor b in rapha.loader(batch_size=4):\n    pass\nrapha.save({'w': torch.zeros(2)})\n"
UNITS = 10**16  # the synthetic dataset's 0.01 per record, in wei


def settled_edge(root):
    """A demo edge with settlement on and alice registered with her chain account (and bob
    without one); alice's signing key."""
    assert edge_cli(["init", str(root), "--demo", "--settlement", "--records", "32"]) == 0
    (root / "edge.toml").write_text((root / "edge.toml").read_text().replace(
        "[chain]\n", "[chain]\nbatch_interval_seconds = 0.3\nrelease_wait_seconds = 15\n"))
    key_path = root / "alice.pem"
    key = create_key(key_path)
    address, created = ensure_chain_account(key_path)
    assert created and (root / "alice.chain.key").stat().st_mode & 0o777 == 0o600
    assert edge_cli(["researchers", "add", "alice", key.public.to_text(), "--chain-address", address,
                     "--config", str(root)]) == 0
    assert edge_cli(["researchers", "add", "bob", PrivateKey.generate().public.to_text(),
                     "--config", str(root)]) == 0
    return key


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("settle") / "edge"
    key = settled_edge(root)
    running = start_edge(root)
    try:
        yield running, key
    finally:
        running.stop()


def test_a_job_locks_runs_and_its_receipt_carries_the_claim_verified_on_chain(edge, tmp_path):
    running, key = edge
    client = EdgeClient(running.url, key)
    spec = make_jobspec(READ, "synthetic-cxr", ["image"], 40, 120, {}, key.key_id)
    client.submit(spec)
    status = client.wait(spec.job_id, timeout=180)
    assert status["state"] == "completed", status["reasons"]
    deadline = time.monotonic() + 30
    receipt = client.receipt(spec.job_id)
    while "settlement_claim" not in receipt and time.monotonic() < deadline:
        time.sleep(0.3)
        receipt = client.receipt(spec.job_id)
    claim = receipt["settlement_claim"]
    used = status["progress"]["records_used"]  # every usable record, fewer than the budget of 40
    assert 0 < used < 40
    cost = client.status(spec.job_id)["cost"]  # what the side panel shows
    assert (cost["price_per_record"], cost["max"], cost["charged"]) == ("0.01", "0.40", str(Decimal("0.01") * used))
    assert (claim["records"], claim["paid_units"], claim["refunded_units"]) == (used, used * UNITS, (40 - used) * UNITS)
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    (tmp_path / "edge.pub").write_text(client.edge_info()["public_key"])
    report = verify_receipt_file(path, edge_key=str(tmp_path / "edge.pub"), rpc_url=running.url + "/chain")
    lines = {check.name: check for check in report.checks}
    assert lines["settlement"].status == "pass", lines["settlement"].detail


def test_a_denied_job_is_refunded_in_full(edge):
    running, key = edge
    client = EdgeClient(running.url, key)
    spec = make_jobspec("import socket\nsocket.socket()\n", "synthetic-cxr", ["image"], 10, 60, {}, key.key_id)
    client.submit(spec)
    status = client.wait(spec.job_id, timeout=120)
    assert status["state"] == "denied" and status["cost"]["charged"] == "0"
    escrow = EscrowRpc(running.url + "/chain", client.edge_info()["settlement"]["contract"])
    deadline = time.monotonic() + 30
    while escrow.lock_of(spec.job_id)["state"] == "locked" and time.monotonic() < deadline:
        time.sleep(0.2)
    entry = escrow.lock_of(spec.job_id)
    assert (entry["state"], entry["records"], entry["amount"]) == ("claimed", 0, 10 * UNITS)
    assert job_key(spec.job_id)  # the lock is keyed by the signed job id


def test_a_researcher_without_a_lock_is_refused_before_the_job_runs(edge, monkeypatch):
    running, key = edge
    client = EdgeClient(running.url, key)
    monkeypatch.setattr(client, "lock_escrow", lambda spec: None)  # a client that skips the lock
    spec = make_jobspec(READ, "synthetic-cxr", ["image"], 8, 60, {}, key.key_id)
    client.submit(spec)
    status = client.wait(spec.job_id, timeout=120)
    assert status["state"] == "denied"
    assert status["reasons"][0].startswith("no escrow lock for this job: the escrow contract")


def test_the_edge_settlement_statement_shows_the_claims(edge, capsys):
    """After the tests above: the released job's claim and the denied job's refund."""
    running, _ = edge
    capsys.readouterr()
    assert edge_cli(["settlement", "--json", "--config", str(running.config)]) == 0
    document = json.loads(capsys.readouterr().out)
    mined = [c for c in document["claims"] if c["state"] == "mined"]
    assert {c["researcher"] for c in mined} == {"alice"} and {c["dataset"] for c in mined} == {"synthetic-cxr"}
    assert sorted(c["records"] for c in mined)[0] == 0 and len(mined) >= 2
    assert document["totals"][0]["jobs"] == len(mined)


def test_the_researcher_statement_reads_the_chain_and_withdraws_refunds(edge, capsys):
    from jupyter_rapha.cli import main as rapha_cli

    running, _ = edge
    capsys.readouterr()
    assert rapha_cli(["statement", "--edge", running.url, "--key", str(running.config / "alice.pem"),
                      "--json", "--withdraw"]) == 0
    document = json.loads(capsys.readouterr().out)
    states = sorted((job["state"], job["records"]) for job in document["jobs"])
    assert states[0] == ("claimed", 0) and all(job["mine"] for job in document["jobs"])
    assert document["withdrawn"].startswith("0x") and document["credit"] == "0"
