"""Receipt verification on mutated receipts: every node of the signed predicate (re-signed,
so the check reaches past the signature) and of the unsigned anchor and envelope replaced
by hostile values. ``verify_document`` must answer with checks, never raise, and never
pass a receipt whose signed content was changed without matching outputs."""

from __future__ import annotations

import base64
import copy
import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from jupyter_rapha.protocol.anchor_proof import batch_anchor, batch_tree
from jupyter_rapha.protocol.attestation import (RuntimeMeasurement, binding_commitment, make_software_quote,
                                                report_data_for)
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.dsse import IN_TOTO_PAYLOAD_TYPE, sign_envelope
from jupyter_rapha.protocol.receipt import (PREDICATE_TYPE, RECEIPT_FORMAT, STATEMENT_TYPE, AnchorObservation,
                                            envelope_digest, sha256_hex, sign_receipt)
from jupyter_rapha.verify import format_report, report_dict, verify_document
from tests.fuzz.strategies import DELETE, budget, every_mutation, json_values, paths, replaced
from tests.receipts.receipt_factory import ADDRESS, METRICS, WEIGHTS, predicate

EDGE = PrivateKey.generate()
RUNTIME = RuntimeMeasurement("a" * 64, "b" * 64, "c" * 64)
TX_HASH = "0x" + "ab" * 32


def attested_predicate() -> dict:
    value = predicate("f" * 32)
    request = hashlib.sha256(b"request").hexdigest()
    value["job"]["request_sha256"] = request
    value["edge"]["key_id"] = EDGE.key_id
    value["receipt_version"] = "1.1"
    commitment = binding_commitment("n" * 32, request, EDGE.key_id, RUNTIME)
    quote = make_software_quote(report_data_for(commitment), RUNTIME.to_dict(), EDGE)
    value["evidence"] = {"attestation": {
        "backend": "unsafe_software", "outcome": "unsafe", "quote_sha256": hashlib.sha256(quote).hexdigest(),
        "quote": base64.b64encode(quote).decode(), "tcb_status": "none", "debug": False,
        "commitment": commitment, "unsafe": "unsafe: software stand-in"}}
    return value


def anchored(value: dict) -> tuple[dict, AnchorObservation]:
    return anchor(sign_receipt(value, sha256_hex(WEIGHTS), EDGE), value)


def signed_anyhow(value: dict) -> tuple[dict, AnchorObservation]:
    """Signed over plain json.dumps, so that values canonical JSON refuses (NaN, lone
    surrogates, huge integers, deep nesting) reach the verifier under a valid signature."""
    statement = {"_type": STATEMENT_TYPE, "predicate": value, "predicateType": PREDICATE_TYPE,
                 "subject": [{"name": "weights.safetensors", "digest": {"sha256": sha256_hex(WEIGHTS)}}]}
    envelope = sign_envelope(json.dumps(statement).encode(), IN_TOTO_PAYLOAD_TYPE, EDGE)
    return anchor({"format": RECEIPT_FORMAT, "envelope": envelope, "anchor": None}, value)


def anchor(document: dict, value: dict) -> tuple[dict, AnchorObservation]:
    digest = envelope_digest(document["envelope"])
    tree = batch_tree([digest, "77" * 32])
    document["anchor"] = batch_anchor(tree, 0, chain_id=1337, tx_hash=TX_HASH, block_number=5)
    observation = AnchorObservation(chain_id=1337, tx_hash=TX_HASH, block_number=5, sender=ADDRESS, data=tree.root,
                                    head_block=9)
    return document, observation


PREDICATE = attested_predicate()
DOCUMENT, OBSERVATION = anchored(PREDICATE)
PREDICATE_PATHS = [p for p in paths(PREDICATE) if p]
DOCUMENT_PATHS = [p for p in paths(DOCUMENT) if p and p[:2] != ("envelope", "payload")]
hostile = json_values | st.just(DELETE)


def verify(document, observation=OBSERVATION):
    report = verify_document(document, EDGE.public, weights=WEIGHTS, metrics=METRICS, rpc_url="http://chain.invalid",
                             observe=lambda url, tx: observation)
    format_report(report)
    json.dumps(report_dict(report))
    return report


def test_the_unmutated_receipt_passes():
    assert verify(copy.deepcopy(DOCUMENT)).passed


def test_every_predicate_node_replaced_by_each_hostile_sample_is_checked():
    for path, _, changed in every_mutation(PREDICATE):
        report = verify(*signed_anyhow(changed))
        if path[:3] in CHECKED_AGAINST_OUTPUTS and changed != PREDICATE:
            assert not report.passed, path


def test_every_document_node_replaced_by_each_hostile_sample_is_checked():
    for path, _, document in every_mutation(DOCUMENT):
        if path[:2] != ("envelope", "payload"):
            assert not verify(document).passed or _only_hint_changed(document), path


@budget(100)
@given(st.sampled_from(PREDICATE_PATHS), hostile)
def test_mutated_signed_predicate_is_checked_never_raises(path, value):
    changed = replaced(PREDICATE, path, value)
    document, observation = signed_anyhow(changed)
    report = verify(document, observation)
    if path[:3] in CHECKED_AGAINST_OUTPUTS and changed != PREDICATE:
        assert not report.passed  # the edge signed it, but the weights and metrics beside it differ


# predicate fields the verifier compares with the outputs it is given
CHECKED_AGAINST_OUTPUTS = {("outputs", "weights", "bytes"), ("outputs", "metrics", "sha256"), ("metrics",),
                           ("metrics", "loss"), ("metrics", "accuracy"), ("outputs",), ("outputs", "weights"),
                           ("outputs", "metrics")}


@budget(100)
@given(st.sampled_from(DOCUMENT_PATHS), hostile)
def test_mutated_document_is_checked_never_raises(path, value):
    document = replaced(DOCUMENT, path, value)
    report = verify(document)
    if document != DOCUMENT:
        assert not report.passed or _only_hint_changed(document)


def _only_hint_changed(document: dict) -> bool:
    # the DSSE keyid is an unauthenticated hint that verifiers ignore by design
    restored = copy.deepcopy(document)
    for signature in restored.get("envelope", {}).get("signatures", []):
        if isinstance(signature, dict):
            signature.pop("keyid", None)
    original = copy.deepcopy(DOCUMENT)
    for signature in original["envelope"]["signatures"]:
        signature.pop("keyid", None)
    return restored == original
