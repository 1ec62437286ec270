import base64

import pytest

from jupyter_rapha.protocol.dsse import pae, sign_envelope, verify_envelope
from jupyter_rapha.protocol.errors import BadInput, BadSignature, Expired, Unsigned, VerificationError
from jupyter_rapha.protocol.keys import PrivateKey, load_public_key
from jupyter_rapha.protocol.request import parse_authorization, sign_request, verify_request


def test_public_key_text_and_pem_round_trip():
    key = PrivateKey.generate()
    assert load_public_key(key.public.to_text()) == key.public
    assert load_public_key(key.public.to_pem()) == key.public
    assert PrivateKey.from_pem(key.to_pem()).key_id == key.key_id


@pytest.mark.parametrize("text", ["", "ed25519:???", "ed25519:" + base64.b64encode(b"x" * 31).decode(), "rsa:abc"])
def test_bad_public_keys_are_refused(text):
    with pytest.raises(BadInput):
        load_public_key(text)


def test_pae_matches_the_dsse_spec():
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_envelope_verifies_exact_bytes_and_rejects_tampering():
    key = PrivateKey.generate()
    envelope = sign_envelope(b'{"a":1}', "application/vnd.in-toto+json", key)
    assert verify_envelope(envelope, key.public) == b'{"a":1}'
    tampered = dict(envelope, payload=base64.b64encode(b'{"a":2}').decode())
    with pytest.raises(BadSignature):
        verify_envelope(tampered, key.public)
    with pytest.raises(BadSignature):
        verify_envelope(dict(envelope, payloadType="text/plain"), key.public)
    with pytest.raises(BadSignature):
        verify_envelope(envelope, PrivateKey.generate().public)
    with pytest.raises(VerificationError):
        verify_envelope(dict(envelope, signatures=[]), key.public)
    with pytest.raises(BadInput):
        verify_envelope(dict(envelope, payload="not base64!"), key.public)


def _signed(key, method="POST", path="/v1/jobs", body=b"{}", now=1000):
    return parse_authorization(sign_request(key, method, path, body, now))


def test_request_signature_binds_method_path_body_and_time():
    key = PrivateKey.generate()
    auth = _signed(key)
    verify_request(auth, key.public, "POST", "/v1/jobs", b"{}", 1000)
    for method, path, body in (("GET", "/v1/jobs", b"{}"), ("POST", "/v1/jobs?x=1", b"{}"),
                               ("POST", "/v1/jobs", b"[]")):
        with pytest.raises(BadSignature):
            verify_request(auth, key.public, method, path, body, 1000)
    with pytest.raises(Expired):
        verify_request(auth, key.public, "POST", "/v1/jobs", b"{}", 1000 + 301)
    with pytest.raises(BadSignature):
        verify_request(auth, PrivateKey.generate().public, "POST", "/v1/jobs", b"{}", 1000)


@pytest.mark.parametrize("header,error", [
    (None, Unsigned), ("", Unsigned), ("Bearer abc", Unsigned),
    ('Rapha-Ed25519 keyId="a"', BadInput),
    ('Rapha-Ed25519 keyId="a", ts="x", nonce="' + "0" * 32 + '", sig="AA=="', BadInput),
    ('Rapha-Ed25519 keyId="a", ts="1", nonce="short", sig="AA=="', BadInput),
    ('Rapha-Ed25519 garbage', BadInput),
])
def test_malformed_authorization_is_refused(header, error):
    with pytest.raises(error):
        parse_authorization(header)
