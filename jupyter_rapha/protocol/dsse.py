"""DSSE v1 envelopes (https://github.com/secure-systems-lab/dsse).

Verification decodes the payload once, checks the signature over PAE of exactly those
bytes, and returns them: callers parse what was signed, never a re-encoding of it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .errors import BadInput, BadSignature, VerificationError
from .keys import PrivateKey, PublicKey

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-Authentication Encoding: what a DSSE signature actually covers."""
    try:
        type_bytes = payload_type.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a hostile envelope
        raise BadInput("envelope payloadType is not valid Unicode") from exc
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def sign_envelope(payload: bytes, payload_type: str, key: PrivateKey) -> dict[str, Any]:
    signature = key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": key.key_id, "sig": base64.b64encode(signature).decode("ascii")}],
    }


def verify_envelope(envelope: Any, key: PublicKey) -> bytes:
    """Return the payload bytes if ``key`` signed them; raise otherwise."""
    if not isinstance(envelope, dict):
        raise BadInput("envelope must be a JSON object")
    payload_type = envelope.get("payloadType")
    signatures = envelope.get("signatures")
    if not isinstance(payload_type, str) or not isinstance(envelope.get("payload"), str):
        raise BadInput("envelope needs string 'payload' and 'payloadType'")
    if not isinstance(signatures, list) or not signatures:
        raise VerificationError("envelope carries no signature")
    payload = _b64(envelope["payload"], "payload")
    message = pae(payload_type, payload)
    for entry in signatures:
        if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
            raise BadInput("each signature needs a base64 'sig'")
        try:
            key.verify(_b64(entry["sig"], "sig"), message)
            return payload
        except BadSignature:
            continue
    raise BadSignature(f"no signature on the envelope verifies with key {key.key_id}")


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"envelope {what} is not standard base64") from exc
