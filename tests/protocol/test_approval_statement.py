"""Signed run approvals: what a steward signs is what the edge reads, and nothing else
passes: another key, a changed byte, another job, edge or request, a stale time, a
malformed statement, a release decision passed off as a run approval."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from jupyter_rapha.protocol.approval import (APPROVAL_PAYLOAD_TYPE, MAX_SKEW_SECONDS, STATEMENT_TYPE,
                                             ApprovalSubject, load_envelope, sign_approval, verify_approval)
from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.dsse import sign_envelope
from jupyter_rapha.protocol.errors import BadInput, BadSignature, Expired
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.review import DecisionSubject, sign_decision

NOW = 1_800_000_000
STEWARD = PrivateKey.generate()
SUBJECT = ApprovalSubject(edge_key_id="e" * 32, job_id="a1" * 16, request_sha256="7" * 64)


def signed(decision: str = "approve", reason: str = "code and cohort as agreed", **changes):
    subject = ApprovalSubject(**{**SUBJECT.__dict__, **changes})
    return sign_approval(STEWARD, subject, decision, reason, NOW)


def payload_of(envelope) -> dict:
    return json.loads(base64.b64decode(envelope["payload"]))


def resigned(statement: dict, key: PrivateKey = STEWARD) -> dict:
    return sign_envelope(canonical_json(statement), APPROVAL_PAYLOAD_TYPE, key)


def test_a_signed_approval_verifies_and_reads_back_what_was_signed():
    envelope = signed("reject", "not the agreed purpose")
    approval = verify_approval(envelope, STEWARD.public, SUBJECT, NOW + 10)
    assert approval.decision == "reject" and not approval.approves
    assert approval.reason == "not the agreed purpose" and approval.job_id == SUBJECT.job_id
    assert approval.steward_key_id == STEWARD.key_id and approval.signed_at == NOW and len(approval.nonce) == 32
    payload = base64.b64decode(envelope["payload"])
    assert payload == canonical_json(payload_of(envelope))
    assert approval.statement_sha256 == hashlib.sha256(payload).hexdigest()
    assert payload_of(envelope)["_type"] == STATEMENT_TYPE
    assert set(approval.summary()) == {"steward_key_id", "decision", "reason", "reason_sha256", "signed_at",
                                       "statement_sha256"}


def test_two_statements_of_the_same_decision_differ_by_their_nonce():
    first, second = (verify_approval(signed(), STEWARD.public, SUBJECT, NOW) for _ in range(2))
    assert first.statement_sha256 != second.statement_sha256


def test_a_forged_statement_is_refused():
    with pytest.raises(BadSignature):
        verify_approval(signed(), PrivateKey.generate().public, SUBJECT, NOW)
    envelope = signed("reject", "no")
    text = base64.b64decode(envelope["payload"]).replace(b'"reject"', b'"approve"')
    with pytest.raises(BadSignature):
        verify_approval({**envelope, "payload": base64.b64encode(text).decode()}, STEWARD.public, SUBJECT, NOW)


def test_a_statement_signed_by_one_key_naming_another_steward_is_refused():
    statement = {**payload_of(signed()), "steward_key_id": PrivateKey.generate().key_id}
    with pytest.raises(BadInput, match="names another steward key"):
        verify_approval(resigned(statement), STEWARD.public, SUBJECT, NOW)


@pytest.mark.parametrize(("changes", "words"), [
    ({"job_id": "b2" * 16}, "is for job"),
    ({"edge_key_id": "f" * 32}, "for another edge"),
    ({"request_sha256": "6" * 64}, "another request than this job's"),
])
def test_a_statement_about_another_job_edge_or_request_is_refused(changes, words):
    with pytest.raises(BadInput, match=words):
        verify_approval(signed(**changes), STEWARD.public, SUBJECT, NOW)


@pytest.mark.parametrize("offset", [MAX_SKEW_SECONDS + 1, -(MAX_SKEW_SECONDS + 1)])
def test_a_stale_statement_is_refused(offset):
    with pytest.raises(Expired):
        verify_approval(signed(), STEWARD.public, SUBJECT, NOW + offset)
    assert verify_approval(signed(), STEWARD.public, SUBJECT, NOW + MAX_SKEW_SECONDS).approves


def test_a_release_decision_by_the_same_key_is_not_a_run_approval():
    # the steward also checks outputs: their release decision must not let a job run
    release = sign_decision(STEWARD, DecisionSubject(SUBJECT.edge_key_id, SUBJECT.job_id, "7" * 64),
                            "approve", "fine", NOW)
    with pytest.raises(BadInput, match="payloadType"):
        verify_approval(release, STEWARD.public, SUBJECT, NOW)
    retyped = sign_envelope(base64.b64decode(release["payload"]), APPROVAL_PAYLOAD_TYPE, STEWARD)
    with pytest.raises(BadInput, match="fields are wrong"):
        verify_approval(retyped, STEWARD.public, SUBJECT, NOW)


@pytest.mark.parametrize(("change", "words"), [
    ({"decision": "approved"}, "decision must be one of"),
    ({"_type": "https://jupyter-rapha.org/release-decision/v1"}, "_type must be"),
    ({"signed_at": True}, "signed_at must be Unix seconds"),
    ({"request_sha256": "7" * 63}, "request_sha256 must be lowercase hex"),
    ({"reason": ""}, "needs a reason"),
    ({"reason": "ok\x1b[2J"}, "control or direction character"),
    ({"extra": 1}, "unknown extra"),
])
def test_malformed_statements_are_refused_even_when_signed(change, words):
    statement = {**payload_of(signed()), **change}
    with pytest.raises(BadInput, match=words):
        verify_approval(resigned(statement), STEWARD.public, SUBJECT, NOW)


@pytest.mark.parametrize("envelope", [None, [], {}, {"payloadType": APPROVAL_PAYLOAD_TYPE},
                                      {"payloadType": APPROVAL_PAYLOAD_TYPE, "payload": "!!", "signatures": []}])
def test_envelopes_of_the_wrong_shape_are_refused(envelope):
    with pytest.raises((BadInput, BadSignature)) as caught:
        verify_approval(envelope, STEWARD.public, SUBJECT, NOW)
    assert caught.value.diagnostics()


def test_load_envelope_bounds_size_and_shape():
    assert load_envelope(json.dumps(signed()).encode())["payloadType"] == APPROVAL_PAYLOAD_TYPE
    with pytest.raises(BadInput, match="larger than"):
        load_envelope(b'"' + b"a" * 20_000 + b'"')
    with pytest.raises(BadInput, match="JSON object"):
        load_envelope(b"[]")
    with pytest.raises(BadInput, match="decision must be one of"):
        sign_approval(STEWARD, SUBJECT, "maybe", "why", NOW)
