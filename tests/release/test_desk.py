"""The output checkers' desk with the held-job walk faked: a decision is verified against
the registered key of the name given, bound to this edge, job and outputs, and every
refusal leaves the job as it was with one refusal row in the audit log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_kernel.audit import AuditLog
from edge_kernel.db import Database
from edge_kernel.release.desk import ReleaseDesk, outputs_digest, outputs_summary
from edge_kernel.release.review import OutputCheckerRule, registered_checkers
from edge_kernel.researchers import Researcher, ResearcherRegistry
from edge_kernel.store import JobRecord
from jupyter_rapha.protocol.errors import BadInput, BadSignature, Expired, NotFound, Replayed, UnknownKey
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.review import DecisionSubject, ReviewRefused, sign_decision

NOW = 1_800_000_000
EDGE = PrivateKey.generate()
KEYS = {name: PrivateKey.generate() for name in ("alice", "ada", "ben", "bob")}
HELD_ID, DONE_ID = "ab" * 16, "cd" * 16
OUTPUTS = ("1" * 64, "2" * 64)


class FakeStore:
    def __init__(self, jobs: list[JobRecord]) -> None:
        self.jobs = {job.job_id: job for job in jobs}

    def get(self, job_id: str) -> JobRecord:
        if job_id not in self.jobs:
            raise NotFound(f"no job {job_id}")
        return self.jobs[job_id]


class FakeHeld:
    """The held-job walk as f-held's HeldJobs behaves towards the desk: the rule admits,
    the entry is audited and kept before it counts, the outcome moves the job."""

    def __init__(self, store: FakeStore, audit: AuditLog, rule: OutputCheckerRule, mode: str) -> None:
        self.store, self.audit, self.rule, self.mode = store, audit, rule, mode
        self.reviews: dict[str, list[dict]] = {HELD_ID: []}

    def held_jobs(self) -> list[JobRecord]:
        return [j for j in self.store.jobs.values() if j.state == "held"]

    def held_detail(self, job_id: str) -> dict:
        return {"checks": {"checks": {"capacity": {"parameters": 10, "records_used": 4,
                                                   "parameters_per_record": 2.5}}, "holdback_size": 50},
                "decision": {"decision": "review", "mode": self.mode, "rule": "mode_review", "reasons": []},
                "reviews": self.reviews[job_id],
                "outputs": {"weights_bytes": 200, "metrics": {"loss": {"count": 3, "last": 0.25}},
                            "tensors": [{"name": "fc.weight", "dtype": "F32", "shape": [2, 4]},
                                        {"name": "fc.bias", "dtype": "F32", "shape": [2]}]}}

    def decide_held(self, job_id: str, review) -> JobRecord:
        job = self.store.get(job_id)
        entry = self.rule.admit(job, self.reviews[job_id], review)
        self.audit.append("release.review", job_id=job_id, actor=entry["checker_key_id"], detail=entry)
        self.reviews[job_id].append(entry)
        outcome = self.rule.outcome(job, {"mode": self.mode}, self.reviews[job_id])
        state = {"release": "completed", "refuse": "refused"}.get(outcome, "held")
        reasons = [r["reason"] for r in self.reviews[job_id] if r["decision"] == "reject"]
        approvals = sum(r["decision"] == "approve" for r in self.reviews[job_id])
        self.store.jobs[job_id] = dataclasses.replace(job, state=state, reasons=reasons,
                                                      progress={"approvals": approvals, "approvals_needed": 2})
        return self.store.jobs[job_id]


def record(job_id: str, state: str) -> JobRecord:
    return JobRecord(job_id, KEYS["alice"].key_id, state, {}, "0" * 64, "synthetic-cxr", "2026-12-03T06:00:00Z",
                     "2026-12-03T06:01:00Z", [], [], None, {"review_needed": 1}, None)


@pytest.fixture
def desk(tmp_path: Path):
    registry = ResearcherRegistry(tmp_path)
    registry.add(Researcher("alice", KEYS["alice"].public.to_text(), ("researcher", "output-checker")))
    registry.add(Researcher("bob", KEYS["bob"].public.to_text()))
    for name in ("ada", "ben"):
        registry.add(Researcher(name, KEYS[name].public.to_text(), ("output-checker",)))
    db = Database(tmp_path / "edge.db")
    audit = AuditLog(db)
    store = FakeStore([record(HELD_ID, "held"), record(DONE_ID, "completed")])
    desk = ReleaseDesk(held=None, store=store, researchers=registry, audit=audit, edge_key=EDGE.public,
                       held_outputs=lambda job_id: OUTPUTS, clock=lambda: NOW)
    desk.held = FakeHeld(store, audit, OutputCheckerRule(lambda: registered_checkers(registry)), "two_person")
    yield desk
    db.close()


def statement(name: str, decision: str = "approve", reason: str = "aggregate, checks clean", *,
              job_id: str = HELD_ID, key: PrivateKey | None = None, now: int = NOW, edge: str | None = None):
    subject = DecisionSubject(edge or EDGE.key_id, job_id, outputs_digest(*OUTPUTS))
    return sign_decision(key or KEYS[name], subject, decision, reason, now)


def audit_events(desk) -> list[tuple[str, str | None]]:
    return [(r["event"], r["job_id"]) for r in desk.audit.db.query("SELECT event, job_id FROM audit ORDER BY seq")]


def test_show_gives_checks_figures_and_counts_never_tensor_names_or_values(desk):
    shown = desk.show(HELD_ID[:10])
    assert shown["job_id"] == HELD_ID and shown["researcher"] == "alice"
    assert shown["checks"]["checks"]["capacity"]["parameters_per_record"] == 2.5
    assert shown["outputs"] == {"tensors": 2, "parameters": 10, "weights_bytes": 200, "dtypes": {"F32": 2},
                                "metrics": {"loss": 3}}
    assert "fc.weight" not in repr(shown) and "0.25" not in repr(shown)
    assert shown["subject"] == {"edge_key_id": EDGE.key_id, "job_id": HELD_ID,
                                "outputs_sha256": outputs_digest(*OUTPUTS)}
    assert [j["job_id"] for j in desk.list()] == [HELD_ID]


def test_two_distinct_checkers_release_and_each_decision_is_audited_first(desk):
    first = desk.decide(HELD_ID, "ada", statement("ada"))
    assert first["state"] == "held" and first["approvals"] == 1
    second = desk.decide(HELD_ID[:8], "ben", statement("ben"))
    assert second["state"] == "completed"
    assert audit_events(desk) == [("release.review", HELD_ID)] * 2


def test_a_reject_refuses_and_carries_the_reason(desk):
    answer = desk.decide(HELD_ID, "ada", statement("ada", "reject", "weights copy record pixels"))
    assert answer["state"] == "refused" and answer["reasons"] == ["weights copy record pixels"]


@pytest.mark.parametrize(("job", "name", "make", "error", "words"), [
    ("ef" * 16, "ada", lambda: statement("ada", job_id="ef" * 16), NotFound, "no job"),
    ("xyz", "ada", lambda: statement("ada"), BadInput, "not a job id"),
    (DONE_ID, "ada", lambda: statement("ada", job_id=DONE_ID), ReviewRefused, "completed, not held: its release was"),
    (DONE_ID[:8], "ada", lambda: statement("ada", job_id=DONE_ID), NotFound, "no held job starts with"),
    (HELD_ID, "carol", lambda: statement("ada"), UnknownKey, "no one named 'carol'"),
    (HELD_ID, "bob", lambda: statement("bob"), ReviewRefused, "without the output-checker role"),
    (HELD_ID, "alice", lambda: statement("alice"), ReviewRefused, "own researcher"),
    (HELD_ID, "ada", lambda: statement("ada", key=KEYS["ben"]), BadSignature,
     "not signed by the key registered for ada"),
    (HELD_ID, "ada", lambda: statement("ada", key=PrivateKey.generate()), BadSignature, "registered for ada"),
    (HELD_ID, "ada", lambda: statement("ada", now=NOW - 3600), Expired, "signed more than"),
    (HELD_ID, "ada", lambda: statement("ada", edge="f" * 32), BadInput, "another edge"),
    (HELD_ID, "ada", lambda: statement("ada", job_id=DONE_ID), BadInput, "is for job"),
    (HELD_ID, "ada", lambda: {"payloadType": "x"}, BadInput, "DSSE envelope"),
])
def test_a_refused_decision_changes_nothing_but_one_refusal_row(desk, job, name, make, error, words):
    with pytest.raises(error, match=words):
        desk.decide(job, name, make())
    assert desk.store.get(HELD_ID).state == "held" and desk.held.reviews[HELD_ID] == []
    rows = desk.audit.db.query("SELECT event, detail FROM audit")
    assert [r["event"] for r in rows] == ["release.review_refused"]
    assert error.__name__ in rows[0]["detail"]


def test_twice_by_one_checker_and_a_replay_are_refused_and_change_nothing(desk):
    approval = statement("ada")
    desk.decide(HELD_ID, "ada", approval)
    kept = list(desk.held.reviews[HELD_ID])
    with pytest.raises(Replayed, match="already received"):
        desk.decide(HELD_ID, "ada", approval)
    with pytest.raises(ReviewRefused, match="one checker counts once"):
        desk.decide(HELD_ID, "ada", statement("ada", "reject", "changed my mind"))
    assert desk.held.reviews[HELD_ID] == kept and desk.store.get(HELD_ID).state == "held"
    assert [e for e, _ in audit_events(desk)] == ["release.review", "release.review_refused",
                                                  "release.review_refused"]


def test_outputs_summary_counts_scalars_and_ignores_malformed_entries():
    summary = outputs_summary({"tensors": [{"dtype": "F16", "shape": []}, "junk"], "metrics": {"a": 1}})
    assert summary["tensors"] == 1 and summary["parameters"] == 1 and summary["metrics"] == {}


def test_show_of_a_decided_job_gives_its_history_from_the_audit_log(desk):
    desk.decide(HELD_ID, "ada", statement("ada", "reject", "weights copy record pixels"))
    with pytest.raises(ReviewRefused):
        desk.decide(HELD_ID, "ben", statement("ben"))
    shown = desk.show(HELD_ID)
    assert shown["state"] == "refused" and shown["reasons"] == ["weights copy record pixels"]
    assert [(d["checker"], d["decision"]) for d in shown["decisions"]] == [("ada", "reject")]
    assert shown["refused_attempts"] == 1 and "outputs" not in shown
    with pytest.raises(NotFound) as unknown:
        desk.show(HELD_ID[:8])
    assert "a job no longer held takes its whole id" in unknown.value.diagnostics()
