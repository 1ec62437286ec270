"""One job's whole walk through JobManager with the real store, audit log, held files and
Releaser, and fakes for what needs a sandbox (the runner, the check process, the release
policy, the outbox): gates, run, release check, held, decided, signed, written, anchor
queued, completed, each step audited before the next; after a crash a written release is
finished only when its files are what its receipt signs."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from edge_kernel.audit import AuditLog
from edge_kernel.db import Database
from edge_kernel.gates.pipeline import GateResult
from edge_kernel.health import StorageHealth
from edge_kernel.jobs import JobManager
from edge_kernel.release.files import RELEASE_FILES
from edge_kernel.release.held import Held, held_dir
from edge_kernel.release.releaser import Releaser
from edge_kernel.sandbox.runner import RunOutcome
from edge_kernel.store import JobStore
from jupyter_rapha.protocol.anchor_proof import is_pending
from jupyter_rapha.protocol.jobspec import parse_jobspec
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import verify_receipt
from tests.protocol.test_jobspec import spec_dict
from tests.release.test_held_walk import FIGURES, RELEASE, FakeChecks, FakePolicy
from tests.release.test_releaser import DISCLOSURE, METER, FakeDatasets, weights

KEY = PrivateKey.generate()


class PassingGate:
    name = "spec"

    def check(self, ctx):
        return GateResult("spec", "pass", {"job": ctx.spec.job_id})


class FakeRunner:
    def __init__(self):
        self.runs = 0

    def run(self, spec, limits, cancel, on_progress):
        self.runs += 1
        on_progress({"records_used": METER.records_used, "batches": 2, "epochs": 1})
        return RunOutcome(status="completed", weights=weights(), metrics={"loss": [0.9, 0.4]}, error=None,
                          meter=METER, started="2026-12-03T06:00:01Z", finished="2026-12-03T06:00:09Z")


class FakeOutbox:
    """A chain that is down: the receipt leaves marked anchor pending."""

    def __init__(self):
        self.queued = []

    def enqueue(self, job_id, digest):
        self.queued.append((job_id, digest))

    def wait_anchored(self, digest, wait_seconds):
        return None


@pytest.fixture
def edge(tmp_path):
    (tmp_path / "jobs").mkdir()
    db = Database(tmp_path / "edge.sqlite")
    store, audit = JobStore(db), AuditLog(db)
    settings = SimpleNamespace(jobs_dir=tmp_path / "jobs", unsafe=(), currency="GBP",
                               chain=SimpleNamespace(release_wait_seconds=0),
                               sandbox=SimpleNamespace(unsafe_keep_job_files=False))
    releaser = Releaser(jobs_dir=settings.jobs_dir, datasets=FakeDatasets(), key=KEY,
                        identity=lambda: {"id": "edge-a", "key_id": KEY.key_id}, unsafe=(), currency="GBP")
    outbox = FakeOutbox()
    manager = JobManager(
        settings=settings, store=store, audit=audit, health=StorageHealth(),
        researchers=SimpleNamespace(by_key_id=lambda key_id: SimpleNamespace(key_id=key_id)),
        datasets=FakeDatasets(), cohort_sizes=SimpleNamespace(size=lambda dataset: 40),
        gates=[PassingGate()], runner=FakeRunner(), releaser=releaser, outbox=outbox, key=KEY, wan=None,
        checks=FakeChecks({"checks": FIGURES, "holdback_size": 50}), release_policy=FakePolicy(RELEASE))
    yield SimpleNamespace(manager=manager, store=store, audit=audit, releaser=releaser, outbox=outbox,
                          jobs=settings.jobs_dir)
    manager.shutdown()
    db.close()


def submitted(edge):
    job, _ = edge.store.create(parse_jobspec(spec_dict()), "r" * 64)
    edge.manager._cancels[job.job_id] = threading.Event()
    return job.job_id


def test_a_job_walks_from_the_gates_to_a_signed_written_release(edge):
    job_id = submitted(edge)
    edge.manager._process_safely(job_id)
    job = edge.store.get(job_id)
    assert job.state == "completed", job.reasons
    release = edge.releaser.written(job_id)
    assert sorted(p.name for p in edge.releaser.release_dir(job_id).iterdir()) == sorted(RELEASE_FILES)
    check = verify_receipt(release.receipt, KEY.public, weights=release.weights, metrics=release.metrics)
    assert not [c for c in check.checks if c.status == "fail"], check.checks
    assert check.predicate["disclosure"]["decision"] == "release"
    assert check.predicate["dataset"]["records_used"] == METER.records_used
    assert [g["name"] for g in check.predicate["gates"] if g["outcome"] == "pass"] == ["spec", "release"]
    assert is_pending(release.receipt["anchor"]) and [job for job, _ in edge.outbox.queued] == [job_id]
    assert not held_dir(edge.jobs, job_id).exists()
    events = [e["event"] for e in edge.audit.entries(job_id)]
    order = ["gates.start", "gates.done", "job.run", "job.ran", "job.hold", "release.decide", "receipt.sign",
             "anchor.queue", "anchor.pending", "job.complete"]
    assert [e for e in events if e in order] == order


def test_outputs_the_release_check_refuses_deny_the_job_and_nothing_is_written(edge, monkeypatch):
    monkeypatch.setattr(FakeRunner, "run", lambda self, *args: RunOutcome(
        status="completed", weights=b"", metrics={}, error=None, meter=METER, started="", finished=""))
    job_id = submitted(edge)
    edge.manager._process_safely(job_id)
    job = edge.store.get(job_id)
    assert job.state == "denied" and job.reasons == ["release: the job saved no weights"]
    assert edge.releaser.written(job_id) is None and edge.outbox.queued == []


def _written_but_not_completed(edge, weights_bytes=None):
    job_id = submitted(edge)
    edge.store.transition(job_id, "running")
    checked = edge.releaser.check(parse_jobspec(spec_dict()), FakeRunner().run(None, None, None, lambda _: None))
    job = edge.store.get(job_id)
    predicate = dict(edge.releaser.predicate(job, parse_jobspec(spec_dict()), [checked.gate],
                                             SimpleNamespace(meter=METER, started="2026-12-03T06:00:01Z",
                                                             finished="2026-12-03T06:00:09Z"),
                                             checked, {}), disclosure=DISCLOSURE)
    document = edge.releaser.sign(predicate, checked.weights_bytes)
    edge.releaser.write(job_id, Held(weights_bytes or checked.weights_bytes, checked.metrics, predicate), document)
    return job_id


def test_after_a_crash_a_written_release_is_finished(edge):
    job_id = _written_but_not_completed(edge)
    edge.manager.recover()
    assert edge.store.get(job_id).state == "completed"
    assert "release.resume" in [e["event"] for e in edge.audit.entries(job_id)]


def test_after_a_crash_a_release_that_is_not_what_its_receipt_signs_fails(edge):
    other = bytearray(weights())
    other[-1] ^= 0x01
    job_id = _written_but_not_completed(edge, bytes(other))
    edge.manager.recover()
    job = edge.store.get(job_id)
    assert job.state == "failed" and edge.outbox.queued == []
