"""The output-checker rules: review needs one approval, two_person two distinct checkers;
the job's own researcher never counts; a checker counts once; any reject refuses."""

from __future__ import annotations

import pytest

from edge_kernel.release.review import (HELD, REFUSE, RELEASE, Checker, JobUnderReview, admit, approvals_needed,
                                        review_outcome)
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.review import DecisionSubject, ReviewRefused, sign_decision, verify_decision

NOW = 1_800_000_000
JOB = "c3" * 16
SUBJECT = DecisionSubject("e" * 32, JOB, "5" * 64)
KEYS = {name: PrivateKey.generate() for name in ("ada", "ben", "cai", "alice")}
CHECKERS = [Checker(name, KEYS[name].key_id) for name in ("ada", "ben", "cai")]


def job(mode: str = "review", researcher: str = "alice", name: str | None = "alice") -> JobUnderReview:
    return JobUnderReview(JOB, mode, KEYS[researcher].key_id, name)


def decided(name: str, decision: str = "approve", reason: str = "aggregate outputs, checks clean", subject=SUBJECT):
    key = KEYS[name]
    return verify_decision(sign_decision(key, subject, decision, reason, NOW), key.public, subject, NOW)


def take(mode: str, *decisions, checkers=CHECKERS, under=None):
    """Admit each decision in turn, as the edge does, and return the outcome after the last."""
    under = under or job(mode)
    taken = []
    for decision in decisions:
        admit(decision, under, checkers, taken)
        taken.append(decision)
    return review_outcome(under, checkers, taken)


def test_review_is_held_until_one_checker_approves():
    assert review_outcome(job("review"), CHECKERS, []).status == HELD
    outcome = take("review", decided("ada"))
    assert outcome.status == RELEASE and [c.name for c in outcome.approved_by] == ["ada"]
    assert outcome.summary() == {"status": "release", "approvals_needed": 1, "approved_by": [KEYS["ada"].key_id],
                                 "rejected_by": [], "reasons": []}


def test_a_job_auto_held_for_review_needs_one_approval():
    assert approvals_needed("auto") == 1 and take("auto", decided("ben")).status == RELEASE


def test_two_person_needs_two_distinct_checkers():
    assert take("two_person", decided("ada")).status == HELD
    outcome = take("two_person", decided("ada"), decided("ben"))
    assert outcome.status == RELEASE and outcome.needed == 2
    assert {c.name for c in outcome.approved_by} == {"ada", "ben"}


def test_one_checker_cannot_count_twice():
    first = decided("ada")
    with pytest.raises(ReviewRefused, match="already decided on job .* one checker counts once"):
        admit(decided("ada"), job("two_person"), CHECKERS, [first])
    # Nor does a second decision that got into the list count: the outcome recounts.
    assert review_outcome(job("two_person"), CHECKERS, [first, decided("ada")]).status == HELD


def test_a_checker_who_rejected_cannot_then_approve():
    with pytest.raises(ReviewRefused, match=r"already decided .*\(reject\)"):
        admit(decided("ada"), job(), CHECKERS, [decided("ada", "reject", "copies")])


def test_the_jobs_own_researcher_cannot_approve_even_when_registered_as_a_checker():
    checkers = [*CHECKERS, Checker("alice", KEYS["alice"].key_id)]
    with pytest.raises(ReviewRefused, match="alice ran job .* own researcher cannot decide"):
        admit(decided("alice"), job("review"), checkers, [])
    assert review_outcome(job("review"), checkers, [decided("alice")]).status == HELD


def test_the_researcher_under_a_new_key_is_still_the_researcher():
    # alice re-registered with a new key and holds the checker role under her name
    new_key = PrivateKey.generate()
    KEYS["alice2"] = new_key
    checkers = [*CHECKERS, Checker("alice", new_key.key_id)]
    decision = verify_decision(sign_decision(new_key, SUBJECT, "approve", "fine", NOW), new_key.public, SUBJECT, NOW)
    with pytest.raises(ReviewRefused, match="own researcher"):
        admit(decision, job("review", name="alice"), checkers, [])


def test_an_unregistered_or_non_checker_key_is_refused():
    with pytest.raises(ReviewRefused, match="not registered as an output checker"):
        admit(decided("alice"), job(researcher="ada", name="ada"), CHECKERS, [])


def test_any_reject_refuses_whatever_the_approvals_and_carries_its_reason():
    outcome = take("two_person", decided("ada"), decided("ben", "reject", "a tensor copies record pixels"))
    assert outcome.status == REFUSE
    assert outcome.reasons == ("a tensor copies record pixels",)
    assert [c.name for c in outcome.rejected_by] == ["ben"]
    assert take("review", decided("cai", "reject", "no")).status == REFUSE


def test_a_removed_checkers_approval_no_longer_counts():
    approval = decided("ada")
    assert review_outcome(job(), CHECKERS, [approval]).status == RELEASE
    assert review_outcome(job(), CHECKERS[1:], [approval]).status == HELD


def test_a_decision_about_another_job_is_refused_and_not_counted():
    other = decided("ada", subject=DecisionSubject("e" * 32, "d4" * 16, "5" * 64))
    with pytest.raises(ReviewRefused, match="is about job"):
        admit(other, job(), CHECKERS, [])
    assert review_outcome(job(), CHECKERS, [other]).status == HELD


@pytest.mark.parametrize("mode", ["", "Review", "two-person", "none"])
def test_an_unknown_release_mode_refuses(mode):
    with pytest.raises(ReviewRefused, match="unknown release mode"):
        approvals_needed(mode)
    with pytest.raises(ReviewRefused):
        review_outcome(job(mode), CHECKERS, [decided("ada")])
    with pytest.raises(ReviewRefused):
        admit(decided("ada"), job(mode), CHECKERS, [])


def test_no_checkers_registered_keeps_the_job_held():
    assert review_outcome(job(), [], [decided("ada")]).status == HELD
