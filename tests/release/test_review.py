"""The output-checker rules: review needs one approval, two_person two distinct checkers;
the job's own researcher never counts; a checker counts once; the same statement again
is a replay; any reject refuses; an unknown mode or a damaged record refuses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edge_kernel.release.review import (PENDING, REFUSE, RELEASE, Checker, OutputCheckerRule, Vote, admit,
                                        approvals_needed, review_outcome)
from jupyter_rapha.protocol.errors import Replayed, StorageFault
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.review import DecisionSubject, ReviewRefused, sign_decision, verify_decision

NOW = 1_800_000_000
JOB = "c3" * 16
SUBJECT = DecisionSubject("e" * 32, JOB, "5" * 64)
KEYS = {name: PrivateKey.generate() for name in ("ada", "ben", "cai", "alice")}
CHECKERS = [Checker(name, KEYS[name].key_id) for name in ("ada", "ben", "cai")]
ALICE = KEYS["alice"].key_id  # the job's researcher


def decided(name: str, decision: str = "approve", reason: str = "aggregate outputs, checks clean",
            subject: DecisionSubject = SUBJECT):
    key = KEYS[name]
    return verify_decision(sign_decision(key, subject, decision, reason, NOW), key.public, subject, NOW)


def vote(name: str, decision: str = "approve", reason: str = "aggregate outputs, checks clean", **kw) -> Vote:
    return Vote.of(decided(name, decision, reason, **kw))


def take(mode: str, *votes: Vote, checkers=CHECKERS):
    """Admit each vote in turn, as the edge does, and return the outcome after the last."""
    taken: list[Vote] = []
    for cast in votes:
        admit(cast, JOB, ALICE, checkers, taken)
        taken.append(cast)
    return review_outcome(mode, JOB, ALICE, checkers, taken)


def test_review_is_pending_until_one_checker_approves():
    assert review_outcome("review", JOB, ALICE, CHECKERS, []).status == PENDING
    outcome = take("review", vote("ada"))
    assert outcome.status == RELEASE
    assert outcome.summary() == {"status": "release", "approvals_needed": 1, "approved_by": ["ada"],
                                 "rejected_by": [], "reasons": []}


def test_a_job_auto_held_for_review_needs_one_approval():
    assert approvals_needed("auto") == 1 and take("auto", vote("ben")).status == RELEASE


def test_two_person_needs_two_distinct_checkers():
    assert take("two_person", vote("ada")).status == PENDING
    outcome = take("two_person", vote("ada"), vote("ben"))
    assert outcome.status == RELEASE and outcome.needed == 2
    assert {c.name for c in outcome.approved_by} == {"ada", "ben"}


def test_one_checker_cannot_count_twice():
    first = vote("ada")
    with pytest.raises(ReviewRefused, match="already decided on job .* one checker counts once"):
        admit(vote("ada"), JOB, ALICE, CHECKERS, [first])
    # Nor does a second vote that got into the record count: the outcome recounts.
    assert review_outcome("two_person", JOB, ALICE, CHECKERS, [first, vote("ada")]).status == PENDING


def test_the_same_statement_again_is_a_replay():
    first = vote("ada")
    with pytest.raises(Replayed, match="already received"):
        admit(first, JOB, ALICE, CHECKERS, [first])


def test_a_checker_who_rejected_cannot_then_approve():
    with pytest.raises(ReviewRefused, match=r"already decided .*\(reject\)"):
        admit(vote("ada"), JOB, ALICE, CHECKERS, [vote("ada", "reject", "copies")])


def test_the_jobs_own_researcher_cannot_approve_even_when_registered_as_a_checker():
    checkers = [*CHECKERS, Checker("alice", ALICE)]
    with pytest.raises(ReviewRefused, match="alice ran job .* own researcher cannot decide"):
        admit(vote("alice"), JOB, ALICE, checkers, [])
    with pytest.raises(ReviewRefused, match="own researcher"):  # not by rejecting either
        admit(vote("alice", "reject", "mine"), JOB, ALICE, checkers, [])
    assert review_outcome("review", JOB, ALICE, checkers, [vote("alice")]).status == PENDING


def test_an_unregistered_or_non_checker_key_is_refused():
    with pytest.raises(ReviewRefused, match="not registered as an output checker"):
        admit(vote("alice"), JOB, KEYS["ada"].key_id, CHECKERS, [])
    assert review_outcome("review", JOB, KEYS["ada"].key_id, CHECKERS, [vote("alice")]).status == PENDING


def test_any_reject_refuses_whatever_the_approvals_and_carries_its_reason():
    outcome = take("two_person", vote("ada"), vote("ben", "reject", "a tensor copies record pixels"))
    assert outcome.status == REFUSE
    assert outcome.reasons == ("a tensor copies record pixels",)
    assert [c.name for c in outcome.rejected_by] == ["ben"]
    assert take("review", vote("cai", "reject", "no")).status == REFUSE
    # a reject after enough approvals would have come too late only if the job was released at once
    assert review_outcome("review", JOB, ALICE, CHECKERS, [vote("ada"), vote("ben", "reject", "no")]).status == REFUSE


def test_a_removed_checkers_approval_no_longer_counts():
    approval = vote("ada")
    assert review_outcome("review", JOB, ALICE, CHECKERS, [approval]).status == RELEASE
    assert review_outcome("review", JOB, ALICE, CHECKERS[1:], [approval]).status == PENDING


def test_a_vote_about_another_job_is_refused_and_in_the_record_is_damage():
    other = vote("ada", subject=DecisionSubject("e" * 32, "d4" * 16, "5" * 64))
    with pytest.raises(ReviewRefused, match="is about job"):
        admit(other, JOB, ALICE, CHECKERS, [])
    with pytest.raises(StorageFault, match="about another job"):
        review_outcome("review", JOB, ALICE, CHECKERS, [other, vote("ben")])


def test_a_kept_reject_refuses_even_once_its_checker_is_removed():
    # a crash between keeping a reject and acting on it; the checker removed before the restart
    outcome = review_outcome("review", JOB, ALICE, CHECKERS[1:], [vote("ada", "reject", "copies"), vote("ben")])
    assert outcome.status == REFUSE and outcome.reasons == ("copies",)
    assert outcome.summary()["rejected_by"] == ["(no longer registered)"]


@pytest.mark.parametrize("mode", ["", "Review", "two-person", "none", None, 2])
def test_an_unknown_release_mode_refuses(mode):
    with pytest.raises(ReviewRefused, match="unknown release mode"):
        approvals_needed(mode)
    with pytest.raises(ReviewRefused):
        review_outcome(mode, JOB, ALICE, CHECKERS, [vote("ada")])


def test_no_checkers_registered_keeps_the_job_pending():
    assert review_outcome("review", JOB, ALICE, [], [vote("ada")]).status == PENDING


# -- the rule as the held-job walk uses it ---------------------------------------------------

def rule(checkers=CHECKERS) -> OutputCheckerRule:
    return OutputCheckerRule(lambda: list(checkers))


HELD_JOB = SimpleNamespace(job_id=JOB, researcher_key_id=ALICE, state="held")


def test_the_rule_keeps_entries_that_count_again_after_a_restart():
    import json

    reviews: list[dict] = []
    for name in ("ada", "ben"):
        entry = rule().admit(HELD_JOB, reviews, decided(name))
        reviews.append(json.loads(json.dumps(entry)))  # kept as JSON (reviews.json)
    assert reviews[0]["checker"] == "ada" and reviews[0]["checker_key_id"] == KEYS["ada"].key_id
    assert reviews[0]["envelope"]["payloadType"].endswith("release-decision+json")
    assert rule().outcome(HELD_JOB, {"mode": "two_person"}, reviews[:1]) == PENDING
    assert rule().outcome(HELD_JOB, {"mode": "two_person"}, reviews) == RELEASE
    with pytest.raises(ReviewRefused, match="already decided"):
        rule().admit(HELD_JOB, reviews, decided("ben", "reject", "second thoughts"))


def test_the_rule_reads_the_registry_at_each_call():
    registered = list(CHECKERS)
    live = OutputCheckerRule(lambda: registered)
    entry = live.admit(HELD_JOB, [], decided("ada"))
    registered.remove(CHECKERS[0])
    assert live.outcome(HELD_JOB, {"mode": "review"}, [entry]) == PENDING


def test_the_rule_refuses_on_a_missing_mode():
    with pytest.raises(ReviewRefused, match="unknown release mode"):
        rule().outcome(HELD_JOB, {}, [])


@pytest.mark.parametrize("damage", [{"decision": "maybe"}, {"checker_key_id": None}, "drop:decision", "list"])
def test_a_damaged_kept_entry_refuses_rather_than_being_skipped(damage):
    entry = rule().admit(HELD_JOB, [], decided("ada", "reject", "copies"))
    if damage == "list":
        entry = [entry]
    elif isinstance(damage, str):
        del entry[damage.split(":")[1]]
    else:
        entry.update(damage)
    with pytest.raises(StorageFault, match="damaged"):
        rule().outcome(HELD_JOB, {"mode": "review"}, [entry])
