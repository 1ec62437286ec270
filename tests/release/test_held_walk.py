"""The held walk over the real store, audit log and held files, with fakes for the check
process, the release policy and the review rule: each step written before the next,
nothing of the outputs in the job's status or events, refusals remove the outputs,
a second walk (a restart) takes up where the first stopped."""

from __future__ import annotations

import json
import struct

import pytest

from edge_kernel.audit import AuditLog
from edge_kernel.db import Database
from edge_kernel.held_jobs import HeldJobs
from edge_kernel.release.checks import CheckFailed, ChecksInterrupted
from edge_kernel.release.held import CHECKS_FILE, DECISION_FILE, Held, held_dir, read_part
from edge_kernel.store import JobStore
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.jobspec import parse_jobspec
from tests.protocol.test_jobspec import spec_dict

FIGURES = {
    "record_copies": {"records_scanned": 48, "numbers_scanned": 1000, "records_matched": 0,
                      "max_correlation": 0.123456789, "seconds": 0.5},
    "membership": {"status": "checked", "auc": 0.5123456, "tpr_at_1pct_fpr": 0.01, "records_used": 48,
                   "holdback_size": 50, "attack": "loss_threshold"},
    "capacity": {"parameters": 2, "records_used": 48, "parameters_per_record": 2 / 48},
}
SECRET_TENSOR = "w_secret_name"


def weights() -> bytes:
    header = json.dumps({SECRET_TENSOR: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 31337.0, 4242.0)


class FakeChecks:
    def __init__(self, result=None, error=None):
        self.result, self.error, self.runs = result, error, 0

    def stop(self):
        self.error = ChecksInterrupted("stopped")

    def run(self, job, held, on_check):
        self.runs += 1
        if self.error:
            raise self.error
        for name, figures in self.result["checks"].items():
            on_check(name, figures)
        return self.result


class FakePolicy:
    def __init__(self, decision):
        self.decision, self.asked = decision, 0

    def decide(self, dataset, checks):
        self.asked += 1
        return dict(self.decision)


class FakeReviews:
    """One approval releases, any reject refuses: the walk's side of the rule only."""

    def admit(self, job, reviews, review):
        if review["checker_key_id"] in {r["checker_key_id"] for r in reviews}:
            raise BadInput("this checker already decided")
        return dict(review)

    def outcome(self, job, decision, reviews):
        if any(r["decision"] == "reject" for r in reviews):
            return "refuse"
        return "release" if len(reviews) >= decision["approvals_needed"] else "pending"


RELEASE = {"decision": "release", "rule": "checks_under_thresholds", "reasons": [], "mode": "auto",
           "approvals_needed": 0}
REVIEW = {"decision": "review", "rule": "mode_review", "reasons": ["the dataset's release mode is review"],
          "mode": "review", "approvals_needed": 1}
REFUSE = {"decision": "refuse", "rule": "record_copies", "mode": "auto", "approvals_needed": 0,
          "reasons": ["48 of the records the job used were found copied in its outputs"]}


@pytest.fixture
def walk(tmp_path):
    db = Database(tmp_path / "edge.sqlite")
    store, audit = JobStore(db), AuditLog(db)
    released = []

    def make(checks, policy, reviews=None):
        return HeldJobs(jobs_dir=tmp_path / "jobs", store=store, audit=audit, checks=checks, policy=policy,
                        reviews=reviews, release=lambda job_id, held, disclosure: released.append(
                            (job_id, disclosure)) or store.transition(job_id, "completed"))

    yield make, store, audit, released, tmp_path / "jobs"
    db.close()


def held_job(store, make, checks, policy, reviews=None):
    spec = parse_jobspec(spec_dict())
    job, _ = store.create(spec, "r" * 64)
    store.transition(job.job_id, "running")
    walk = make(checks, policy, reviews)
    predicate = {"outputs": {"weights": {"sha256": "a" * 64}, "metrics": {"sha256": "b" * 64}}}
    walk.hold(job.job_id, Held(weights(), {"loss": [0.987654321]}, predicate), [], {"records_used": 48})
    return walk, job.job_id


def leaked(store, job_id) -> str:
    seen = json.dumps([store.get(job_id).status(), store.events(job_id)])
    for secret in (SECRET_TENSOR, "31337", "0.987654321", "0.123456789", "0.5123456"):
        if secret in seen:
            return secret
    return ""


def test_an_auto_release_carries_the_exact_figures_and_the_researcher_saw_them_rounded(walk):
    make, store, audit, released, jobs = walk
    checks = FakeChecks({"checks": FIGURES, "holdback_size": 50})
    held, job_id = held_job(store, make, checks, FakePolicy(RELEASE))
    assert store.get(job_id).state == "held"
    assert store.get(job_id).progress["checks_done"] == 0
    held.check_and_decide(job_id)
    [(released_id, disclosure)] = released
    assert released_id == job_id and store.get(job_id).state == "completed"
    assert disclosure["checks"]["record_copies"]["max_correlation"] == 0.123456789
    assert disclosure["holdback_size"] == 50 and disclosure["decision"] == "release"
    assert disclosure["rule"] == "checks_under_thresholds" and disclosure["reviews"] == []
    progress = [e["data"] for e in store.events(job_id) if e["kind"] == "progress"]
    assert [p["checks_done"] for p in progress][:3] == [1, 2, 3]
    assert progress[-1]["copies_max_correlation"] == 0.12 and progress[-1]["mia_auc"] == 0.51
    assert not leaked(store, job_id)
    events = [e["event"] for e in audit.entries(job_id)]
    assert events.index("job.hold") < events.index("release.checks") < events.index("release.decide")


def test_a_refusal_removes_the_outputs_and_tells_the_reason(walk):
    make, store, _, released, jobs = walk
    held, job_id = held_job(store, make, FakeChecks({"checks": FIGURES, "holdback_size": 50}), FakePolicy(REFUSE))
    held.check_and_decide(job_id)
    job = store.get(job_id)
    assert job.state == "refused" and released == []
    assert job.reasons == ["release: 48 of the records the job used were found copied in its outputs"]
    assert not held_dir(jobs, job_id).exists()
    assert not leaked(store, job_id)


@pytest.mark.parametrize("problem", ["the check process exited with -9", "the checks ran past 900 s"])
def test_a_check_that_crashed_or_timed_out_refuses_with_no_internals(walk, problem):
    make, store, _, released, jobs = walk
    held, job_id = held_job(store, make, FakeChecks(error=CheckFailed(problem)), FakePolicy(RELEASE))
    held.check_and_decide(job_id)
    job = store.get(job_id)
    assert job.state == "refused" and released == []
    assert job.reasons == ["release: a disclosure check could not be completed, so the outputs were not released"]
    assert problem not in json.dumps(job.status())
    assert not held_dir(jobs, job_id).exists()


def test_held_is_not_cancellable_and_never_final_until_decided(walk):
    make, store, _, _, _ = walk
    held, job_id = held_job(store, make, FakeChecks({"checks": FIGURES, "holdback_size": 50}), FakePolicy(REVIEW))
    held.check_and_decide(job_id)
    assert store.get(job_id).state == "held"
    progress = store.get(job_id).progress
    assert progress["review_needed"] == 1 and progress["approvals"] == 0 and progress["approvals_needed"] == 1
    from edge_kernel.store import TERMINAL
    assert "held" not in TERMINAL and "refused" in TERMINAL


def test_a_restart_keeps_a_held_job_held_and_runs_only_unfinished_checks(walk):
    make, store, _, released, jobs = walk
    checks = FakeChecks({"checks": FIGURES, "holdback_size": 50})
    policy = FakePolicy(REVIEW)
    held, job_id = held_job(store, make, checks, policy)
    held.check_and_decide(job_id)
    assert checks.runs == 1 and read_part(held_dir(jobs, job_id), CHECKS_FILE)["holdback_size"] == 50
    again = make(checks, policy, FakeReviews())  # the edge restarted
    assert again.resume() == [job_id]
    again.check_and_decide(job_id)
    assert checks.runs == 1 and policy.asked == 1  # checks and decision were kept
    assert store.get(job_id).state == "held" and released == []


def test_checks_cut_off_by_a_restart_run_again(walk):
    make, store, _, released, jobs = walk
    held, job_id = held_job(store, make, FakeChecks(), FakePolicy(RELEASE))  # stopped before its checks
    assert read_part(held_dir(jobs, job_id), CHECKS_FILE) is None
    checks = FakeChecks({"checks": FIGURES, "holdback_size": 50})
    make(checks, FakePolicy(RELEASE)).check_and_decide(job_id)
    assert checks.runs == 1 and store.get(job_id).state == "completed"


def test_one_approval_releases_a_review_job_with_the_checker_in_the_receipt(walk):
    make, store, _, released, jobs = walk
    held, job_id = held_job(store, make, FakeChecks({"checks": FIGURES, "holdback_size": 50}),
                            FakePolicy(REVIEW), FakeReviews())
    with pytest.raises(BadInput, match="still being checked"):
        held.decide_held(job_id, {"checker_key_id": "k1", "decision": "approve", "reason": "fine"})
    held.check_and_decide(job_id)
    held.decide_held(job_id, {"checker_key_id": "k1", "decision": "approve", "reason": "fine",
                              "statement_sha256": "c" * 64})
    [(_, disclosure)] = released
    assert disclosure["reviews"] == [{"checker_key_id": "k1", "decision": "approve", "reason": "fine",
                                      "statement_sha256": "c" * 64}]
    with pytest.raises(BadInput, match="not held"):
        held.decide_held(job_id, {"checker_key_id": "k2", "decision": "approve"})


def test_a_reject_sends_the_checkers_reason_and_nothing_else(walk):
    make, store, _, released, jobs = walk
    held, job_id = held_job(store, make, FakeChecks({"checks": FIGURES, "holdback_size": 50}),
                            FakePolicy(REVIEW), FakeReviews())
    held.check_and_decide(job_id)
    held.decide_held(job_id, {"checker_key_id": "k1", "decision": "reject", "reason": "too many parameters"})
    job = store.get(job_id)
    assert job.state == "refused" and released == []
    assert job.reasons == ["release: an output checker refused the release: too many parameters"]
    assert not held_dir(jobs, job_id).exists()


def test_a_decision_on_an_auto_job_or_twice_by_one_checker_changes_nothing(walk):
    make, store, _, released, jobs = walk
    held, job_id = held_job(store, make, FakeChecks({"checks": FIGURES, "holdback_size": 50}),
                            FakePolicy({**REVIEW, "approvals_needed": 2}), FakeReviews())
    held.check_and_decide(job_id)
    held.decide_held(job_id, {"checker_key_id": "k1", "decision": "approve"})
    assert store.get(job_id).progress["approvals"] == 1
    with pytest.raises(BadInput, match="already"):
        held.decide_held(job_id, {"checker_key_id": "k1", "decision": "approve"})
    assert store.get(job_id).state == "held" and len(read_part(held_dir(jobs, job_id), "reviews.json")) == 1
    decision = read_part(held_dir(jobs, job_id), DECISION_FILE)
    assert decision["decision"] == "review"


def test_checks_cut_off_by_a_stop_leave_the_job_held_and_unanswered(walk):
    make, store, _, released, jobs = walk
    checks = FakeChecks(error=ChecksInterrupted("the edge stopped while the disclosure checks ran"))
    held, job_id = held_job(store, make, checks, FakePolicy(RELEASE))
    held.check_and_decide(job_id)
    assert store.get(job_id).state == "held" and released == []
    assert read_part(held_dir(jobs, job_id), CHECKS_FILE) is None and held_dir(jobs, job_id).exists()
