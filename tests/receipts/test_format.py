"""The receipt as standard tools see it: securesystemslib's DSSE verifier accepts the
envelope as it is, the payload is an in-toto Statement v1, and the predicate version rule
lets later minors add fields without breaking this verifier."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import SSlibKey

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.dsse import IN_TOTO_PAYLOAD_TYPE, sign_envelope
from jupyter_rapha.protocol.keys import PrivateKey, load_public_key
from jupyter_rapha.protocol.receipt import PREDICATE_TYPE, dsse_keyid, sha256_hex, sign_receipt, verify_receipt
from tests.receipts.receipt_factory import WEIGHTS, predicate


def sslib_key(public_text: str) -> SSlibKey:
    """The edge's published key (``ed25519:BASE64``) in securesystemslib's own format."""
    raw = load_public_key(public_text).raw
    return SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(raw))


@pytest.fixture
def edge_key():
    return PrivateKey.generate()


@pytest.fixture
def document(edge_key):
    return sign_receipt(predicate(), sha256_hex(WEIGHTS), edge_key)


def test_securesystemslib_dsse_accepts_the_envelope_as_is(edge_key, document):
    envelope = Envelope.from_dict(copy.deepcopy(document["envelope"]))
    accepted = envelope.verify([sslib_key(edge_key.public.to_text())], threshold=1)
    assert list(accepted) == [dsse_keyid(edge_key.public)]
    statement = json.loads(envelope.payload)
    assert envelope.payload_type == IN_TOTO_PAYLOAD_TYPE
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [{"name": "weights.safetensors", "digest": {"sha256": sha256_hex(WEIGHTS)}}]


def test_securesystemslib_also_accepts_the_pem_key(edge_key, document):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = SSlibKey.from_crypto(load_pem_public_key(edge_key.public.to_pem()))
    Envelope.from_dict(copy.deepcopy(document["envelope"])).verify([key], threshold=1)


def test_securesystemslib_refuses_a_tampered_payload_and_another_key(edge_key, document):
    tampered = copy.deepcopy(document["envelope"])
    statement = json.loads(base64.b64decode(tampered["payload"]))
    statement["predicate"]["dataset"]["records_used"] = 2
    tampered["payload"] = base64.b64encode(canonical_json(statement)).decode()
    with pytest.raises(SslibVerificationError):
        Envelope.from_dict(tampered).verify([sslib_key(edge_key.public.to_text())], threshold=1)
    other = PrivateKey.generate()
    with pytest.raises(SslibVerificationError):
        Envelope.from_dict(copy.deepcopy(document["envelope"])).verify([sslib_key(other.public.to_text())], 1)


def test_the_old_keyid_convention_is_what_stock_verifiers_rejected(edge_key):
    # The first format put the edge's own short key id in "keyid"; securesystemslib
    # matches signatures to keys by id and found no key for it.
    envelope = sign_envelope(canonical_json({"_type": "x"}), IN_TOTO_PAYLOAD_TYPE, edge_key)
    with pytest.raises(SslibVerificationError):
        Envelope.from_dict(envelope).verify([sslib_key(edge_key.public.to_text())], threshold=1)


def test_envelope_signed_by_securesystemslib_verifies_here(edge_key):
    # The other direction: our verifier accepts what a stock DSSE signer produced.
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.signer import CryptoSigner

    pem = edge_key._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    signer = CryptoSigner(serialization.load_pem_private_key(pem, None))
    statement = {"_type": "https://in-toto.io/Statement/v1", "predicateType": PREDICATE_TYPE,
                 "subject": [{"name": "weights.safetensors", "digest": {"sha256": sha256_hex(WEIGHTS)}}],
                 "predicate": predicate()}
    envelope = Envelope(canonical_json(statement), IN_TOTO_PAYLOAD_TYPE, {})
    envelope.sign(signer)
    document = {"format": "rapha-receipt/v1", "envelope": envelope.to_dict(), "anchor": None}
    result = verify_receipt(document, edge_key.public)
    assert [c.status for c in result.checks[:3]] == ["pass", "pass", "pass"], result.checks


@pytest.mark.parametrize("version", [1, "1", "1.1", "1.27"])
def test_later_minor_versions_with_unknown_fields_still_verify(edge_key, version):
    later = dict(predicate(), receipt_version=version, carbon={"kg_co2e": 0.3})
    later["dataset"] = dict(later["dataset"], provenance_uri="urn:x")
    result = verify_receipt(sign_receipt(later, sha256_hex(WEIGHTS), edge_key), edge_key.public)
    assert ("statement", "pass") in [(c.name, c.status) for c in result.checks]


@pytest.mark.parametrize("version", [2, "2.0", "one", None, True, "1.x"])
def test_other_major_versions_are_refused_by_name(edge_key, version):
    later = dict(predicate(), receipt_version=version)
    result = verify_receipt(sign_receipt(later, sha256_hex(WEIGHTS), edge_key), edge_key.public)
    failed = [c for c in result.checks if c.status == "fail"]
    assert failed and failed[0].name == "statement" and "not supported" in failed[0].detail


def test_a_new_predicate_type_is_refused(edge_key):
    from jupyter_rapha.protocol import receipt as module

    document = sign_receipt(predicate(), sha256_hex(WEIGHTS), edge_key)
    statement = json.loads(base64.b64decode(document["envelope"]["payload"]))
    statement["predicateType"] = PREDICATE_TYPE.replace("/v1", "/v2")
    document["envelope"] = sign_envelope(canonical_json(statement), IN_TOTO_PAYLOAD_TYPE, edge_key)
    result = module.verify_receipt(document, edge_key.public)
    assert [c.name for c in result.checks if c.status == "fail"] == ["statement"]
