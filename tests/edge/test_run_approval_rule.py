"""The run-approval rules: none needs nobody, one needs one steward, two_person two
distinct stewards; the job's own researcher never counts; a steward counts once; the same
statement again is a replay; any reject rejects; a non-steward, an unknown mode or a
damaged record refuses. And the registry side: the data-steward role, its typos, and a
steward-only key that cannot sign researcher requests."""

from __future__ import annotations

import pytest

from edge_kernel.researchers import Researcher, check_role
from edge_kernel.run_approval import (PENDING, REJECT, RUN, Steward, StewardVote, admit, approval_outcome,
                                      approvals_needed, kept_entry, votes_of)
from jupyter_rapha.protocol.approval import ApprovalRefused, ApprovalSubject, sign_approval, verify_approval
from jupyter_rapha.protocol.errors import BadInput, Replayed, StorageFault
from jupyter_rapha.protocol.keys import PrivateKey

NOW = 1_800_000_000
JOB = "c3" * 16
SUBJECT = ApprovalSubject("e" * 32, JOB, "5" * 64)
KEYS = {name: PrivateKey.generate() for name in ("ada", "ben", "cai", "alice")}
STEWARDS = [Steward(name, KEYS[name].key_id) for name in ("ada", "ben")]
ALICE = KEYS["alice"].key_id  # the job's researcher


def approval(name: str, decision: str = "approve", reason: str = "as agreed with the project",
             subject: ApprovalSubject = SUBJECT):
    key = KEYS[name]
    return verify_approval(sign_approval(key, subject, decision, reason, NOW), key.public, subject, NOW)


def vote(name: str, decision: str = "approve", **kw) -> StewardVote:
    return StewardVote.of(approval(name, decision, **kw))


def take(mode: str, *votes: StewardVote, stewards=STEWARDS):
    taken: list[StewardVote] = []
    for cast in votes:
        admit(cast, JOB, ALICE, stewards, taken)
        taken.append(cast)
    return approval_outcome(mode, JOB, ALICE, stewards, taken)


def test_modes_and_their_counts():
    assert [approvals_needed(m) for m in ("none", "one", "two_person")] == [0, 1, 2]
    assert take("none").status == RUN
    for bad in ("two-person", None, 2, "TWO_PERSON"):
        with pytest.raises(ApprovalRefused, match="unknown run approval mode"):
            approvals_needed(bad)


def test_one_needs_one_approval():
    assert take("one").status == PENDING
    outcome = take("one", vote("ada"))
    assert outcome.status == RUN and [s.name for s in outcome.approved_by] == ["ada"]


def test_two_person_runs_only_after_two_distinct_stewards():
    assert take("two_person", vote("ada")).status == PENDING
    outcome = take("two_person", vote("ada"), vote("ben"))
    assert outcome.status == RUN and outcome.summary()["approved_by"] == ["ada", "ben"]


def test_a_steward_counts_once_and_a_replay_is_refused():
    first = vote("ada")
    with pytest.raises(ApprovalRefused, match="one steward counts once"):
        take("two_person", first, vote("ada"))
    with pytest.raises(ApprovalRefused, match="one steward counts once"):
        take("two_person", vote("ada", "reject"), vote("ada"))
    with pytest.raises(Replayed):
        take("two_person", first, first)


def test_the_owner_cannot_approve_even_as_a_steward():
    stewards = [*STEWARDS, Steward("alice", ALICE)]
    with pytest.raises(ApprovalRefused, match="own researcher cannot approve"):
        take("one", vote("alice"), stewards=stewards)
    # and a kept vote of theirs is not counted either
    assert approval_outcome("one", JOB, ALICE, stewards, [vote("alice")]).status == PENDING


def test_a_key_that_is_not_a_steward_is_refused():
    with pytest.raises(ApprovalRefused, match="not registered as a data steward"):
        take("one", vote("cai"))


def test_a_removed_stewards_approval_no_longer_counts():
    votes = [vote("ada"), vote("ben")]
    assert approval_outcome("two_person", JOB, ALICE, STEWARDS[:1], votes).status == PENDING


def test_any_reject_rejects_with_its_reason():
    outcome = take("two_person", vote("ada"), vote("ben", "reject", reason="not the approved purpose"))
    assert outcome.status == REJECT and outcome.reasons == ("not the approved purpose",)
    assert [s.name for s in outcome.rejected_by] == ["ben"]


def test_an_approval_about_another_job_is_refused_and_a_kept_one_is_damage():
    other = vote("ada", subject=ApprovalSubject("e" * 32, "d4" * 16, "5" * 64))
    with pytest.raises(ApprovalRefused, match="about job"):
        take("one", other)
    with pytest.raises(StorageFault):
        approval_outcome("one", JOB, ALICE, STEWARDS, [other])


def test_kept_entries_read_back_and_damaged_ones_refuse():
    entry = kept_entry(STEWARDS[0], approval("ada"))
    assert entry["steward"] == "ada" and entry["envelope"]["payloadType"]
    assert votes_of([entry]) == [vote_of_entry(entry)]
    for damaged in ({**entry, "decision": "maybe"}, {k: v for k, v in entry.items() if k != "steward_key_id"}, 7):
        with pytest.raises(StorageFault):
            votes_of([damaged])


def vote_of_entry(entry) -> StewardVote:
    return StewardVote(entry["job_id"], entry["steward_key_id"], entry["decision"], entry["reason"],
                       entry["statement_sha256"])


def test_the_data_steward_role_and_its_typos():
    check_role("data-steward")
    check_role("output-checker")
    for typo in ("data-stewart", "data_steward", "datasteward"):
        with pytest.raises(BadInput, match="did you mean data-steward"):
            check_role(typo)


def test_staff_only_registrations():
    def entry(*roles: str) -> Researcher:
        return Researcher("x", "unused", roles)
    assert entry("data-steward").is_staff_only and entry("data-steward").is_data_steward
    assert entry("data-steward", "output-checker").is_staff_only
    assert not entry("data-steward", "researcher").is_staff_only
    assert not entry("researcher").is_data_steward


@pytest.mark.parametrize(("roles", "refused"), [
    (("data-steward",), True), (("data-steward", "output-checker"), True), (("output-checker",), True),
    (("data-steward", "researcher"), False), (("researcher",), False)])
def test_a_staff_only_key_signs_no_researcher_request(tmp_path, roles, refused):
    import time

    from edge_kernel.auth import Authenticator
    from edge_kernel.db import Database
    from edge_kernel.researchers import ResearcherRegistry
    from jupyter_rapha.protocol.errors import AuthError
    from jupyter_rapha.protocol.request import sign_request

    registry = ResearcherRegistry(tmp_path)
    key = KEYS["ada"]
    registry.add(Researcher("ada", key.public.to_text(), roles))
    auth = Authenticator(Database(tmp_path / "edge.db"), registry)
    now = int(time.time())
    header = sign_request(key, "GET", "/v1/jobs", b"", now)
    if refused:
        with pytest.raises(AuthError, match="output checker only|hospital staff roles only"):
            auth.authenticate(header, "GET", "/v1/jobs", b"", now)
    else:
        assert auth.authenticate(header, "GET", "/v1/jobs", b"", now).name == "ada"


def test_the_obligation_is_enforced_and_an_unknown_mode_denies():
    from edge_kernel.gates.obligations import enforceable
    from jupyter_rapha.protocol.errors import PolicyDenied

    assert enforceable({}).run_approval == "none"
    assert enforceable({"run_approval": "two_person"}).run_approval == "two_person"
    for bad in ("two-person", "unknown: [\"twice\"]", 2, None):
        with pytest.raises(PolicyDenied, match="run_approval"):
            enforceable({"run_approval": bad})


def test_status_says_when_a_run_approval_lacks_stewards(tmp_path, capsys):
    import json

    from edge_kernel.cli import main as edge_cli

    root = tmp_path / "demo"
    assert edge_cli(["init", str(root), "--demo"]) == 0
    capsys.readouterr()
    assert edge_cli(["status", "--no-probe", "--config", str(root)]) == 0
    assert "run approval: none asked (jobs run once their gates pass)" in capsys.readouterr().out
    data_path = root / "policies" / "data.json"
    data = json.loads(data_path.read_text())
    data["hospital"]["datasets"]["synthetic-cxr"]["run_approval"] = "two_person"
    data["hospital"]["run_approval"] = {"purposes": {"demo": "twice"}}
    data_path.write_text(json.dumps(data))
    assert edge_cli(["researchers", "add", "ada", KEYS["ada"].public.to_text(), "--role", "data-steward",
                     "--config", str(root)]) == 0
    capsys.readouterr()
    assert edge_cli(["status", "--no-probe", "--config", str(root)]) == 0
    out = capsys.readouterr().out
    assert "run approval: synthetic-cxr two_person, purpose demo twice" in out and "data stewards: ada" in out
    assert "dataset synthetic-cxr: run approval two_person needs 2 data steward(s), 1 registered" in out
    assert "purpose demo: run approval 'twice' is not none, one or two_person: its jobs are denied" in out
    assert edge_cli(["status", "--no-probe", "--json", "--config", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["run_approval"]["modes"] == {"synthetic-cxr": "two_person"}
