import sqlite3

import pytest

from edge_kernel.audit import AuditLog
from edge_kernel.db import Database
from edge_kernel.store import JobStore
from jupyter_rapha.protocol.errors import BadInput, NotFound, StorageFault
from tests.protocol.test_jobspec import spec_dict
from jupyter_rapha.protocol.jobspec import parse_jobspec


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "edge.sqlite")
    yield database
    database.close()


def test_audit_chain_detects_any_edit(db, tmp_path):
    log = AuditLog(db)
    for index in range(5):
        log.append("event", job_id=str(index), detail={"n": index})
    assert log.verify().ok and log.verify().entries == 5
    raw = sqlite3.connect(tmp_path / "edge.sqlite")
    raw.execute("UPDATE audit SET detail='{\"n\":9}' WHERE seq=3")
    raw.commit()
    check = log.verify()
    assert not check.ok and check.first_bad_seq == 3
    raw.execute("UPDATE audit SET detail='{\"n\":2}' WHERE seq=3")
    raw.execute("DELETE FROM audit WHERE seq=2")
    raw.commit()
    assert log.verify().first_bad_seq == 3


def test_transitions_are_idempotent_and_ordered(db):
    store = JobStore(db)
    spec = parse_jobspec(spec_dict())
    job, created = store.create(spec, "r" * 64)
    assert created and job.state == "submitted"
    again, created = store.create(spec, "r" * 64)
    assert not created and again.job_id == job.job_id
    assert store.transition(job.job_id, "running").state == "running"
    assert store.transition(job.job_id, "running").state == "running"  # repeat: no-op
    assert store.transition(job.job_id, "completed", receipt={"x": 1}).receipt == {"x": 1}
    with pytest.raises(StorageFault):
        store.transition(job.job_id, "running")
    with pytest.raises(StorageFault):
        store.transition(job.job_id, "failed")


def test_job_id_reuse_with_other_spec_is_refused(db):
    store = JobStore(db)
    store.create(parse_jobspec(spec_dict()), "r" * 64)
    with pytest.raises(BadInput):
        store.create(parse_jobspec(spec_dict(params={"epochs": 3})), "r" * 64)


def test_other_researchers_jobs_are_unknown(db):
    store = JobStore(db)
    store.create(parse_jobspec(spec_dict()), "r" * 64)
    assert store.get("a" * 32, "b" * 32).job_id == "a" * 32
    with pytest.raises(NotFound):
        store.get("a" * 32, "f" * 32)


def test_a_status_carries_the_epochs_the_job_asked_for(db):
    store = JobStore(db)
    job, _ = store.create(parse_jobspec(spec_dict()), "r" * 64)  # params: {"epochs": 2}
    assert job.status()["epochs_asked"] == 2
    other, _ = store.create(parse_jobspec(spec_dict(job_id="d" * 32, params={})), "s" * 64)
    assert other.status()["epochs_asked"] == 1  # no epochs named: the runtime's default
    odd, _ = store.create(parse_jobspec(spec_dict(job_id="e" * 32, params={"epochs": "three"})), "t" * 64)
    assert odd.status()["epochs_asked"] is None
