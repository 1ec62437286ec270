import base64
import copy

import pytest

from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import (AnchorObservation, envelope_digest, metrics_digest, sha256_hex,
                                            sign_receipt, verify_receipt)

WEIGHTS = b"weights-bytes"
METRICS = {"loss": [0.9, 0.5]}
ADDRESS = "0x00000000000000000000000000000000000000aa"


def predicate():
    return {"receipt_version": 1, "job": {"id": "j" * 32}, "edge": {"id": "e", "key_id": "k", "anchor_address": ADDRESS,
            "chain_id": 1337}, "dataset": {"id": "d", "records_used": 3}, "budget": {"max_records": 3},
            "settlement": {"amount": "0"},
            "outputs": {"weights": {"sha256": sha256_hex(WEIGHTS), "bytes": len(WEIGHTS)},
                        "metrics": {"sha256": metrics_digest(METRICS)}},
            "metrics": METRICS, "gates": [], "unsafe": [], "times": {}}


@pytest.fixture
def signed():
    key = PrivateKey.generate()
    document = sign_receipt(predicate(), sha256_hex(WEIGHTS), key)
    digest = envelope_digest(document["envelope"])
    document["anchor"] = {"method": "evm-tx", "chain_id": 1337, "tx_hash": "0x" + "ab" * 32, "block_number": 5,
                          "envelope_sha256": digest}
    observation = AnchorObservation(1337, "0x" + "ab" * 32, 5, ADDRESS, bytes.fromhex(digest), head_block=7)
    return key, document, observation


def names(result, status):
    return [c.name for c in result.checks if c.status == status]


def test_complete_receipt_verifies(signed):
    key, document, observation = signed
    result = verify_receipt(document, key.public, weights=WEIGHTS, metrics=METRICS, anchor=observation)
    assert result.ok(), result.checks
    assert names(result, "pass") == ["format", "signature", "statement", "weights", "metrics", "anchor"]


def test_every_payload_byte_matters(signed):
    key, document, _ = signed
    payload = bytearray(base64.b64decode(document["envelope"]["payload"]))
    for index in range(0, len(payload), 7):
        tampered = copy.deepcopy(document)
        flipped = bytearray(payload)
        flipped[index] ^= 0x01
        tampered["envelope"]["payload"] = base64.b64encode(bytes(flipped)).decode()
        assert names(verify_receipt(tampered, key.public), "fail") == ["signature"]


def test_wrong_key_fails_signature(signed):
    _, document, _ = signed
    assert names(verify_receipt(document, PrivateKey.generate().public), "fail") == ["signature"]


@pytest.mark.parametrize("change", [
    {"tx_hash": "0x" + "cd" * 32}, {"chain_id": 1}, {"block_number": 4}, {"sender": "0x" + "11" * 20},
    {"data": b"\x00" * 32}, {"head_block": 3},
])
def test_anchor_mismatch_fails_anchor(signed, change):
    key, document, observation = signed
    bad = AnchorObservation(**{**observation.__dict__, **change})
    assert names(verify_receipt(document, key.public, anchor=bad), "fail") == ["anchor"]


def test_anchor_for_another_envelope_fails(signed):
    key, document, observation = signed
    document["anchor"]["envelope_sha256"] = "00" * 32
    assert names(verify_receipt(document, key.public, anchor=observation), "fail") == ["anchor"]


def test_unchecked_anchor_is_skipped_not_passed(signed):
    key, document, _ = signed
    result = verify_receipt(document, key.public)
    assert names(result, "skipped") == ["anchor"]
    assert not result.ok() and result.ok(allow_skipped=True)


def test_other_weights_and_metrics_fail(signed):
    key, document, observation = signed
    result = verify_receipt(document, key.public, weights=b"other", metrics={"loss": [0.1]}, anchor=observation)
    assert names(result, "fail") == ["weights", "metrics"]


@pytest.mark.parametrize("doc", [None, [], {"format": "other"}, {"format": "rapha-receipt/v1"}])
def test_malformed_documents_fail_format(doc):
    result = verify_receipt(doc, PrivateKey.generate().public)
    assert names(result, "fail") == ["format"]
