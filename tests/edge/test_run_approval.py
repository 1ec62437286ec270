"""Approval before a job runs, against a real edge: a dataset whose policy data asks for
``run_approval`` holds each job in ``awaiting_approval`` until enough data stewards
approve with signed statements over ``rapha-edge approval`` (the admin socket); nothing
runs before. Refused without a change: the job's own researcher, a researcher key, the
wrong key, a forged or replayed statement, a job in the wrong state. A reject ends the
job denied with its reason; a cancel ends a waiting job; a restart keeps it waiting; the
approvals are named in the receipt."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from pathlib import Path

import pytest

from edge_kernel.admin import AdminClient
from edge_kernel.cli import main as edge_cli
from edge_kernel.edge import EDGE_KEY_FILE
from edge_kernel.settings import load_settings
from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.protocol.approval import ApprovalSubject, sign_approval
from jupyter_rapha.protocol.errors import AuthError, RaphaError
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import verify_receipt
from tests.harness import init_edge, start_edge

pytestmark = pytest.mark.slow

CELL = """
import torch
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
for batch in rapha.loader(batch_size=4, shuffle=True, seed=1):
    loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
    optimiser.zero_grad(); loss.backward(); optimiser.step()
    rapha.log(loss=float(loss))
rapha.save(model)
"""


class Site:
    """A demo edge with a researcher (alice, who also holds the data-steward role), two data
    stewards (ada, ben) and a researcher without the role (bob), restartable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = {"alice": init_edge(root, records=40)}
        self.key_files = {}
        for name, roles in (("alice", ["researcher", "data-steward"]), ("ada", ["data-steward"]),
                            ("ben", ["data-steward"]), ("bob", ["researcher"])):
            key = self.keys.setdefault(name, PrivateKey.generate())
            self.key_files[name] = root.parent / f"{name}.pem"
            self.key_files[name].write_bytes(key.to_pem())
            self.key_files[name].chmod(0o600)
            assert edge_cli(["researchers", "add", name, key.public.to_text(), *[f"--role={r}" for r in roles],
                             "--replace", "--config", str(root)]) == 0
        self.edge = start_edge(root)

    def restart(self) -> None:
        self.edge.stop()
        self.edge = start_edge(self.root)

    def client(self) -> EdgeClient:
        return EdgeClient(self.edge.url, self.keys["alice"])

    def admin(self) -> AdminClient:
        return AdminClient(load_settings(self.root).state_dir, timeout=60)

    def run_approval(self, mode: str) -> None:
        path = self.root / "policies" / "data.json"
        data = json.loads(path.read_text())
        data["hospital"]["datasets"]["synthetic-cxr"]["run_approval"] = mode
        path.write_text(json.dumps(data))

    def waiting_job(self, mode: str) -> str:
        self.run_approval(mode)
        spec = make_jobspec(CELL, "synthetic-cxr", ["image", "finding"], 8, 120, {"epochs": 1},
                            self.keys["alice"].key_id)
        job_id = self.client().submit(spec)
        # the researcher's wait returns: a steward decides, maybe days from now
        assert self.client().wait(job_id, poll=0.3, timeout=240)["state"] == "awaiting_approval"
        return job_id

    def wait_for(self, job_id: str, state: str, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client().status(job_id)
            if status["state"] == state:
                return status
            assert status["state"] in ("submitted", "awaiting_approval", "running", "held"), status
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not reach {state}: {self.client().status(job_id)}")

    def approval(self, capsys, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = edge_cli(["approval", *args, "--config", str(self.root)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def decide(self, capsys, decision: str, job_id: str, name: str, reason: str = "code and cohort as agreed",
               key: str | None = None) -> tuple[int, str, str]:
        return self.approval(capsys, decision, job_id, "--as", name, "--key", str(self.key_files[key or name]),
                             "--reason", reason)

    def statement(self, job_id: str, name: str, decision: str = "approve") -> dict:
        shown = self.admin().get(f"/admin/v1/approval/{job_id}")["subject"]
        return sign_approval(self.keys[name], ApprovalSubject(**shown), decision, "as agreed", int(time.time()))

    def audit_events(self, job_id: str) -> list[str]:
        db = sqlite3.connect(f"file:{load_settings(self.root).db_path}?mode=ro", uri=True)
        try:
            return [row[0] for row in db.execute("SELECT event FROM audit WHERE job_id=? ORDER BY seq", (job_id,))]
        finally:
            db.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    running = Site(tmp_path_factory.mktemp("approval") / "edge")
    try:
        yield running
    finally:
        running.edge.stop()


def test_two_person_runs_only_after_two_distinct_stewards(site, capsys):
    job_id = site.waiting_job("two_person")
    status = site.client().status(job_id)
    assert status["progress"] == {"approvals": 0, "approvals_needed": 2}
    code, out, _ = site.approval(capsys, "list")
    assert code == 0 and job_id in out and "0 of 2 approvals" in out
    code, out, _ = site.approval(capsys, "show", job_id[:10])
    assert code == 0 and "run approval: two_person (0 of 2 approvals)" in out
    assert "cost at most" in out and "budget: 8 records, 120 s" in out and "scan: 0 finding(s)" in out
    assert "policy: allow=True" in out and "rapha.save(model)" in out
    events_before = site.audit_events(job_id)
    assert "approval.wait" in events_before and "job.run" not in events_before

    refused = {"alice": "submitted job", "bob": "without the data-steward role", "carol": "no one named 'carol'"}
    for name, words in refused.items():
        code, _, err = site.decide(capsys, "approve", job_id, name, key="alice" if name == "carol" else None)
        assert code == 1 and words in err, err
    code, _, err = site.decide(capsys, "approve", job_id, "ada", key="ben")
    assert code == 1 and "not signed by the key registered for ada" in err
    forged = site.statement(job_id, "ada")
    payload = base64.b64decode(forged["payload"]).replace(b'"as agreed"', b'"as agreee"')
    with pytest.raises(RaphaError, match="not signed by the key registered for ada"):
        site.admin().post(f"/admin/v1/approval/{job_id}/decision",
                          {"steward": "ada", "statement": {**forged, "payload": base64.b64encode(payload).decode()}})
    code, _, err = site.approval(capsys, "approve", job_id, "--as", "ada", "--key", str(site.key_files["ada"]),
                                 "--reason", "fine", "--request", "0" * 12)
    assert code == 1 and "nothing was signed" in err
    assert site.client().status(job_id)["state"] == "awaiting_approval"
    assert "approval.decide" not in site.audit_events(job_id)

    statement = site.statement(job_id, "ada")
    answer = site.admin().post(f"/admin/v1/approval/{job_id}/decision", {"steward": "ada", "statement": statement})
    assert answer["state"] == "awaiting_approval" and answer["approvals"] == 1
    with pytest.raises(RaphaError, match="already received"):  # the same statement again: a replay
        site.admin().post(f"/admin/v1/approval/{job_id}/decision", {"steward": "ada", "statement": statement})
    code, _, err = site.decide(capsys, "approve", job_id, "ada", reason="really")
    assert code == 1 and "one steward counts once" in err
    time.sleep(2)
    assert site.client().status(job_id)["state"] == "awaiting_approval"  # one approval: it does not run

    site.restart()  # a waiting job keeps waiting, with its approval
    assert site.client().status(job_id)["state"] == "awaiting_approval"
    assert site.client().status(job_id)["progress"]["approvals"] == 1

    code, out, _ = site.decide(capsys, "approve", job_id, "ben")
    assert code == 0 and "approved to run" in out, out
    site.wait_for(job_id, "completed")
    receipt = site.client().receipt(job_id)
    edge_key = PrivateKey.from_pem((load_settings(site.root).keys_dir / EDGE_KEY_FILE).read_bytes()).public
    check = verify_receipt(receipt, edge_key, weights=site.client().weights(job_id),
                           metrics=site.client().metrics(job_id))
    assert check.statement and not [c for c in check.checks if c.status == "fail"], check.checks
    envelope = receipt["envelope"]
    section = json.loads(base64.b64decode(envelope["payload"]))["predicate"]["approval"]
    assert section["mode"] == "two_person"
    assert [a["steward_key_id"] for a in section["approvals"]] == [site.keys["ada"].key_id, site.keys["ben"].key_id]
    assert all(len(a["statement_sha256"]) == 64 and a["decision"] == "approve" for a in section["approvals"])
    events = site.audit_events(job_id)
    assert events.count("approval.decide") == 2 and events.index("approval.granted") < events.index("job.run")
    assert events.count("approval.refused") >= 6

    code, _, err = site.decide(capsys, "approve", job_id, "ada")  # the wrong state: nothing changes
    assert code == 1 and "completed, not awaiting approval" in err
    assert site.client().status(job_id)["state"] == "completed"


def test_a_reject_ends_the_job_denied_with_the_reason(site, capsys):
    job_id = site.waiting_job("one")
    code, out, _ = site.decide(capsys, "reject", job_id, "ben", reason="not the purpose agreed with the DAC")
    assert code == 0 and "will not run" in out
    status = site.client().status(job_id)
    assert status["state"] == "denied"
    assert status["reasons"] == ["approval: a data steward rejected the job: not the purpose agreed with the DAC"]
    assert "job.run" not in site.audit_events(job_id)


def test_the_researcher_may_cancel_a_waiting_job(site, capsys):
    job_id = site.waiting_job("one")
    assert site.client().cancel(job_id)["state"] == "cancelled"
    code, _, err = site.decide(capsys, "approve", job_id, "ada")
    assert code == 1 and "cancelled, not awaiting approval" in err
    assert site.client().status(job_id)["state"] == "cancelled"


def test_a_steward_only_key_signs_no_researcher_request(site):
    with pytest.raises(AuthError, match="hospital staff roles only"):
        EdgeClient(site.edge.url, site.keys["ada"]).jobs()
