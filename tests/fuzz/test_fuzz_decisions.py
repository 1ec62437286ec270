"""Output checkers' signed decisions as the edge receives them: every node of a real
envelope and of its statement (re-signed, so that the content itself is hostile) replaced
by each hostile sample, and arbitrary bytes and JSON. Each is refused with the project's
own error, and nothing but the original statement is ever accepted."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from edge_kernel.release.review import Checker, OutputCheckerRule
from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.dsse import sign_envelope
from jupyter_rapha.protocol.errors import BadInput, RaphaError, StorageFault
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.review import (DECISION_PAYLOAD_TYPE, DecisionSubject, load_envelope, sign_decision,
                                           verify_decision)
from tests.fuzz.strategies import budget, every_mutation, json_bytes, json_values

NOW = 1_800_000_000
CHECKER = PrivateKey.generate()
SUBJECT = DecisionSubject("e" * 32, "a" * 32, "5" * 64)
ENVELOPE = sign_decision(CHECKER, SUBJECT, "approve", "aggregate model, checks clean", NOW)
STATEMENT = json.loads(base64.b64decode(ENVELOPE["payload"]))


def test_every_mutation_of_the_envelope_is_refused_with_a_project_error():
    for _, _, changed in every_mutation(ENVELOPE):
        try:
            decision = verify_decision(changed, CHECKER.public, SUBJECT, NOW)
        except RaphaError as refused:
            assert refused.diagnostics()
            continue
        # only a change outside what is signed (the keyid hint) may still verify
        assert decision.statement_sha256 == verify_decision(ENVELOPE, CHECKER.public, SUBJECT, NOW).statement_sha256


def test_every_mutation_of_a_signed_statement_is_refused_or_read_as_signed():
    accepted = 0
    for _, _, changed in every_mutation(STATEMENT):
        try:
            envelope = sign_envelope(canonical_json(changed), DECISION_PAYLOAD_TYPE, CHECKER)
        except BadInput:
            continue  # not even encodable (NaN, 10**400, a lone surrogate): no checker could sign it
        try:
            decision = verify_decision(envelope, CHECKER.public, SUBJECT, NOW)
        except RaphaError as refused:
            assert refused.diagnostics()
            continue
        # Only a reason of other plain text passes, and it is read exactly as signed.
        accepted += 1
        assert (decision.reason, decision.decision) == (changed["reason"], "approve")
    assert accepted <= 1


@budget(100)
@given(json_bytes | st.binary(max_size=300))
def test_any_bytes_as_a_decision_request_raise_only_bad_input(data):
    try:
        envelope = load_envelope(data)
    except BadInput:
        return
    try:
        verify_decision(envelope, CHECKER.public, SUBJECT, NOW)
    except RaphaError:
        pass


JOB = type("Job", (), {"job_id": SUBJECT.job_id, "researcher_key_id": "b" * 32})()
RULE = OutputCheckerRule(lambda: [Checker("ada", CHECKER.key_id)])


def test_every_mutation_of_a_kept_reject_refuses_or_stays_a_reject():
    # reviews.json is the edge's own file: a damaged entry must never release by being skipped
    reject = RULE.admit(JOB, [], verify_decision(sign_decision(CHECKER, SUBJECT, "reject", "copies", NOW),
                                                 CHECKER.public, SUBJECT, NOW))
    approval = RULE.admit(JOB, [], verify_decision(ENVELOPE, CHECKER.public, SUBJECT, NOW))
    for _, _, changed in every_mutation(json.loads(json.dumps(reject))):
        try:
            outcome = RULE.outcome(JOB, {"mode": "review"}, [changed, approval])
        except (StorageFault, BadInput):
            continue
        assert outcome == "refuse", (changed, outcome)


@budget(100)
@given(json_values)
def test_any_value_as_an_envelope_raises_only_project_errors(value):
    try:
        verify_decision(value, CHECKER.public, SUBJECT, NOW)
    except RaphaError:
        pass
