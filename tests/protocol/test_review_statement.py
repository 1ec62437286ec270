"""Signed release decisions: what a checker signs is what the edge reads, and nothing
else passes: another key, a changed byte, another job, edge or set of outputs, a stale
time, a malformed or oversized statement."""

from __future__ import annotations

import base64
import json

import pytest

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.dsse import sign_envelope
from jupyter_rapha.protocol.errors import BadInput, BadSignature, Expired
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.review import (DECISION_PAYLOAD_TYPE, MAX_REASON_CHARS, MAX_SKEW_SECONDS,
                                           STATEMENT_TYPE, DecisionSubject, check_reason, load_envelope,
                                           sign_decision, verify_decision)

NOW = 1_800_000_000
CHECKER = PrivateKey.generate()
SUBJECT = DecisionSubject(edge_key_id="e" * 32, job_id="a1" * 16, outputs_sha256="5" * 64)


def signed(decision: str = "approve", reason: str = "aggregate model, checks clean", **changes):
    subject = DecisionSubject(**{**SUBJECT.__dict__, **changes})
    return sign_decision(CHECKER, subject, decision, reason, NOW)


def payload_of(envelope) -> dict:
    return json.loads(base64.b64decode(envelope["payload"]))


def resigned(statement: dict, key: PrivateKey = CHECKER) -> dict:
    return sign_envelope(canonical_json(statement), DECISION_PAYLOAD_TYPE, key)


def test_a_signed_decision_verifies_and_reads_back_what_was_signed():
    envelope = signed("reject", "weights hold a copy of a record")
    decision = verify_decision(envelope, CHECKER.public, SUBJECT, NOW + 10)
    assert decision.decision == "reject" and not decision.approves
    assert decision.reason == "weights hold a copy of a record"
    assert decision.checker_key_id == CHECKER.key_id and decision.job_id == SUBJECT.job_id
    assert decision.signed_at == NOW and len(decision.nonce) == 32
    payload = base64.b64decode(envelope["payload"])
    assert payload == canonical_json(payload_of(envelope))  # the signed bytes are the canonical form
    import hashlib
    assert decision.statement_sha256 == hashlib.sha256(payload).hexdigest()
    summary = decision.summary()
    assert summary["reason_sha256"] == hashlib.sha256(b"weights hold a copy of a record").hexdigest()
    assert set(summary) == {"checker_key_id", "decision", "reason", "reason_sha256", "signed_at", "statement_sha256"}


def test_two_statements_of_the_same_decision_differ_by_their_nonce():
    first, second = (verify_decision(signed(), CHECKER.public, SUBJECT, NOW) for _ in range(2))
    assert first.nonce != second.nonce and first.statement_sha256 != second.statement_sha256


def test_another_keys_signature_is_refused():
    with pytest.raises(BadSignature):
        verify_decision(signed(), PrivateKey.generate().public, SUBJECT, NOW)


def test_a_statement_signed_by_one_key_naming_another_checker_is_refused():
    other = PrivateKey.generate()
    statement = {**payload_of(signed()), "checker_key_id": other.key_id}
    with pytest.raises(BadInput, match="names another checker key"):
        verify_decision(resigned(statement), CHECKER.public, SUBJECT, NOW)


@pytest.mark.parametrize("position", [0, 17, -3])
def test_a_changed_byte_of_the_payload_breaks_the_signature(position):
    envelope = signed()
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[position] ^= 0x01
    tampered = {**envelope, "payload": base64.b64encode(bytes(payload)).decode()}
    with pytest.raises((BadSignature, BadInput)):
        verify_decision(tampered, CHECKER.public, SUBJECT, NOW)


def test_a_decision_turned_from_reject_to_approve_breaks_the_signature():
    envelope = signed("reject", "no")
    text = base64.b64decode(envelope["payload"]).replace(b'"reject"', b'"approve"')
    with pytest.raises(BadSignature):
        verify_decision({**envelope, "payload": base64.b64encode(text).decode()}, CHECKER.public, SUBJECT, NOW)


def test_a_changed_signature_is_refused():
    envelope = signed()
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[5] ^= 0x80
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(BadSignature):
        verify_decision(envelope, CHECKER.public, SUBJECT, NOW)


@pytest.mark.parametrize(("changes", "words"), [
    ({"job_id": "b2" * 16}, "is for job"),
    ({"edge_key_id": "f" * 32}, "for another edge"),
    ({"outputs_sha256": "6" * 64}, "other outputs than this job holds"),
])
def test_a_statement_about_another_job_edge_or_outputs_is_refused(changes, words):
    # A replay carried to another job, or an approval of outputs that changed since shown.
    with pytest.raises(BadInput, match=words):
        verify_decision(signed(**changes), CHECKER.public, SUBJECT, NOW)


@pytest.mark.parametrize("offset", [MAX_SKEW_SECONDS + 1, -(MAX_SKEW_SECONDS + 1), 86_400])
def test_a_statement_outside_the_freshness_window_is_refused(offset):
    with pytest.raises(Expired):
        verify_decision(signed(), CHECKER.public, SUBJECT, NOW + offset)


def test_the_edge_of_the_freshness_window_is_accepted():
    assert verify_decision(signed(), CHECKER.public, SUBJECT, NOW + MAX_SKEW_SECONDS).approves


def test_another_payload_type_is_refused_even_if_signed():
    # A researcher's receipt or request signed by the same key is not a decision.
    envelope = sign_envelope(base64.b64decode(signed()["payload"]), "application/vnd.in-toto+json", CHECKER)
    with pytest.raises(BadInput, match="payloadType"):
        verify_decision(envelope, CHECKER.public, SUBJECT, NOW)


@pytest.mark.parametrize(("change", "words"), [
    ({"decision": "approved"}, "decision must be one of"),
    ({"decision": True}, "decision must be one of"),
    ({"_type": "https://example.org/other"}, "_type must be"),
    ({"signed_at": "1800000000"}, "signed_at must be Unix seconds"),
    ({"signed_at": True}, "signed_at must be Unix seconds"),
    ({"signed_at": 2**41}, "signed_at must be Unix seconds"),
    ({"nonce": "XYZ"}, "nonce must be lowercase hex"),
    ({"job_id": "A1" * 16}, "job_id must be lowercase hex"),
    ({"reason": ""}, "needs a reason"),
    ({"reason": 7}, "needs a reason"),
    ({"reason": "ok\x1b[2J"}, "control or direction character"),
    ({"reason": " padded "}, "surrounding whitespace"),
    ({"extra": 1}, "unknown extra"),
])
def test_malformed_statements_are_refused_even_when_signed(change, words):
    statement = {**payload_of(signed()), **change}
    with pytest.raises(BadInput, match=words):
        verify_decision(resigned(statement), CHECKER.public, SUBJECT, NOW)


def test_a_statement_without_a_field_is_refused():
    statement = payload_of(signed())
    del statement["outputs_sha256"]
    with pytest.raises(BadInput, match="missing outputs_sha256"):
        verify_decision(resigned(statement), CHECKER.public, SUBJECT, NOW)


@pytest.mark.parametrize("envelope", [None, [], "text", {}, {"payloadType": DECISION_PAYLOAD_TYPE},
                                      {"payloadType": DECISION_PAYLOAD_TYPE, "payload": "!!", "signatures": []}])
def test_envelopes_of_the_wrong_shape_are_refused(envelope):
    with pytest.raises((BadInput, BadSignature)) as caught:
        verify_decision(envelope, CHECKER.public, SUBJECT, NOW)
    assert caught.value.diagnostics()


def test_a_payload_that_is_not_a_json_object_is_refused():
    envelope = sign_envelope(b"[1, 2]", DECISION_PAYLOAD_TYPE, CHECKER)
    with pytest.raises(BadInput, match="not a JSON object"):
        verify_decision(envelope, CHECKER.public, SUBJECT, NOW)


def test_a_deeply_nested_payload_is_refused_before_parsing():
    envelope = sign_envelope(b"[" * 100_000 + b"]" * 100_000, DECISION_PAYLOAD_TYPE, CHECKER)
    with pytest.raises(BadInput, match="nested deeper"):
        verify_decision(envelope, CHECKER.public, SUBJECT, NOW)


def test_load_envelope_bounds_size_and_shape():
    assert load_envelope(json.dumps(signed()).encode())["payloadType"] == DECISION_PAYLOAD_TYPE
    with pytest.raises(BadInput, match="larger than"):
        load_envelope(b'"' + b"a" * 20_000 + b'"')
    with pytest.raises(BadInput, match="JSON object"):
        load_envelope(b"[]")
    with pytest.raises(BadInput, match="not UTF-8"):
        load_envelope(b'{"a": "\xff"}')


def test_reasons_are_required_bounded_and_plain_text():
    assert check_reason("  checks clean\nmodel is aggregate  ") == "checks clean\nmodel is aggregate"
    for bad in ("", "   ", "x" * (MAX_REASON_CHARS + 1), "a\u202eb", "tab\there"):
        with pytest.raises(BadInput):
            check_reason(bad)
    with pytest.raises(BadInput, match="decision must be one of"):
        sign_decision(CHECKER, SUBJECT, "maybe", "why", NOW)


def test_statement_type_names_the_version():
    assert payload_of(signed())["_type"] == STATEMENT_TYPE and STATEMENT_TYPE.endswith("/v1")
