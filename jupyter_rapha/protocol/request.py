"""Signed HTTP requests from registered researchers (S8).

The signature covers the method, the path with its query, a timestamp, a one-time nonce
and the SHA-256 of the body, so a captured request cannot be replayed, re-aimed at
another endpoint or given another body. The edge keeps the nonces it has seen for the
freshness window and refuses any it sees twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass

from .bounded import whole_number
from .errors import BadInput, Expired, Unsigned
from .keys import PrivateKey, PublicKey

SCHEME = "Rapha-Ed25519"
MAX_SKEW_SECONDS = 300
MAX_TIMESTAMP = 2**40  # Unix seconds far past any clock; more digits are not a time
_FIELD = re.compile(r'\s*([a-zA-Z]+)="([^"]*)"\s*')
_NONCE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class RequestAuth:
    key_id: str
    timestamp: int
    nonce: str
    signature: bytes


def signing_string(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    return digest_signing_string(method, path, timestamp, nonce, hashlib.sha256(body).hexdigest())


def digest_signing_string(method: str, path: str, timestamp: int, nonce: str, body_sha256: str) -> bytes:
    """The signed text, given the body's SHA-256 (a streamed body is hashed as it goes)."""
    return f"rapha-request-v1\n{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{body_sha256}".encode()


def sign_request(key: PrivateKey, method: str, path: str, body: bytes, now: int, nonce: str | None = None) -> str:
    """Return the value of the ``Authorization`` header for this request."""
    return sign_request_digest(key, method, path, hashlib.sha256(body).hexdigest(), now, nonce)


def sign_request_digest(key: PrivateKey, method: str, path: str, body_sha256: str, now: int,
                        nonce: str | None = None) -> str:
    """``sign_request`` for a body known by its SHA-256 (an artifact streamed from a file)."""
    nonce = nonce or secrets.token_hex(16)
    sig = key.sign(digest_signing_string(method, path, now, nonce, body_sha256))
    encoded = base64.b64encode(sig).decode("ascii")
    return f'{SCHEME} keyId="{key.key_id}", ts="{now}", nonce="{nonce}", sig="{encoded}"'


def parse_authorization(header: str | None) -> RequestAuth:
    if not header:
        raise Unsigned("request is not signed", hint="send it with a registered researcher key")
    scheme, _, rest = header.partition(" ")
    if scheme != SCHEME:
        raise Unsigned(f"authorization scheme must be {SCHEME}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        match = _FIELD.fullmatch(part)
        if not match:
            raise BadInput("authorization header is malformed: expected key=\"value\" pairs")
        fields[match.group(1)] = match.group(2)
    missing = {"keyId", "ts", "nonce", "sig"} - fields.keys()
    if missing:
        raise BadInput(f"authorization header lacks {', '.join(sorted(missing))}")
    if not _NONCE.fullmatch(fields["nonce"]):
        raise BadInput("authorization nonce must be 32 lowercase hex digits")
    timestamp = whole_number(fields["ts"], "authorization ts (Unix seconds)", max_value=MAX_TIMESTAMP)
    try:
        signature = base64.b64decode(fields["sig"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput("authorization sig is not base64") from exc
    return RequestAuth(fields["keyId"], timestamp, fields["nonce"], signature)


def verify_request(
    auth: RequestAuth, key: PublicKey, method: str, path: str, body: bytes, now: int,
    max_skew: int = MAX_SKEW_SECONDS,
) -> None:
    """Raise unless the request is signed by ``key`` and fresh. Replays are the caller's store."""
    verify_request_digest(auth, key, method, path, hashlib.sha256(body).hexdigest(), now, max_skew)


def verify_request_digest(auth: RequestAuth, key: PublicKey, method: str, path: str, body_sha256: str, now: int,
                          max_skew: int = MAX_SKEW_SECONDS) -> None:
    """``verify_request`` against the body's SHA-256 as the request claims it (a streamed
    upload is checked before its body is read; its bytes are then held to that digest)."""
    if abs(now - auth.timestamp) > max_skew:
        raise Expired(f"request timestamp is more than {max_skew} s from the edge's clock",
                      hint="check the clock of the machine that signed it")
    key.verify(auth.signature, digest_signing_string(method, path, auth.timestamp, auth.nonce, body_sha256))
