"""RFC 3161 trusted timestamps as the anchor of a batch of receipts (no chain needed).

For institutions that cannot publish to a public chain, the edge sends its batch root
(the same RFC 6962 root over envelope digests the EVM path anchors) to a Time-Stamp
Authority and stores the signed token. Each receipt then carries::

    {"method": "rfc3161-batch", "tsa": URL or name, "token": base64 DER TimeStampToken,
     "gen_time": "YYYY-MM-DDTHH:MM:SSZ", "envelope_sha256",
     "batch": {"root", "index", "size", "proof": [hex...]}}

A verifier needs no network: the inclusion proof puts the envelope under the root, and
the token (``timestamp_token.check_token``) proves that a TSA it trusts saw that root at
genTime. ``tsa`` and ``gen_time`` are hints for people; only the token is trusted.
Request and response encodings live here too, so the edge's HTTP adapter stays thin.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from asn1crypto import algos, tsp  # type: ignore[import-untyped]

from .anchor_proof import _batch_proof  # the same bounds as the EVM batch form
from .errors import VerificationError
from .merkle import MerkleTree, verify_inclusion
from .timestamp_token import MAX_TOKEN_BYTES, TimestampInfo, check_token

METHOD_TIMESTAMP = "rfc3161-batch"
REQUEST_TYPE = "application/timestamp-query"
RESPONSE_TYPE = "application/timestamp-reply"
_GRANTED = ("granted", "granted_with_mods")


# -- the edge side: request, response, anchor blocks ---------------------------------------

def timestamp_request(digest: bytes, nonce: int) -> bytes:
    """DER TimeStampReq over a SHA-256 imprint, with a nonce and certReq (the token must
    carry the TSA certificate, so a verifier needs only the root of trust)."""
    if len(digest) != 32:
        raise VerificationError("timestamp imprint must be 32 bytes")
    imprint = tsp.MessageImprint({"hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                                  "hashed_message": digest})
    request = tsp.TimeStampReq({"version": "v1", "message_imprint": imprint, "nonce": nonce, "cert_req": True})
    return bytes(request.dump())


def token_from_response(response_der: bytes) -> bytes:
    """The TimeStampToken's DER from a TimeStampResp; VerificationError if refused or
    malformed (the status text is the TSA's, never ours to trust, so it is cut short)."""
    if not 0 < len(response_der) <= MAX_TOKEN_BYTES:
        raise VerificationError("timestamp response is empty or too large")
    try:
        response = tsp.TimeStampResp.load(response_der, strict=True)
        status = response["status"]["status"].native
        token = response["time_stamp_token"]
        if status not in _GRANTED or not token:
            text = status if isinstance(status, str) else "unknown"
            raise VerificationError(f"TSA refused the request (status {text[:32]})")
        return bytes(token.dump())
    except VerificationError:
        raise
    except Exception as exc:  # bad DER raises many types; all refuse
        raise VerificationError("timestamp response is malformed") from exc


def check_response_token(token_der: bytes, digest: bytes, nonce: int, trust_anchors_pem: bytes) -> TimestampInfo:
    """What the edge checks before it stores a token: every verifier check, and that the
    token answers this request (its nonce), not a replayed earlier one."""
    info = check_token(token_der, digest, trust_anchors_pem)
    if info.nonce != nonce:
        raise VerificationError("timestamp token does not answer this request (nonce differs)")
    return info


def timestamp_anchor(tree: MerkleTree, index: int, *, tsa: str, token_der: bytes, gen_time: str) -> dict[str, Any]:
    proof = tree.prove(index)
    return {"method": METHOD_TIMESTAMP, "tsa": tsa, "token": base64.b64encode(token_der).decode("ascii"),
            "gen_time": gen_time, "envelope_sha256": tree.leaves[index].hex(),
            "batch": {"root": tree.root.hex(), "index": index, "size": len(tree),
                      "proof": [step.hex() for step in proof.path]}}


# -- the verifier side -------------------------------------------------------------------

def is_timestamp(anchor: Any) -> bool:
    return isinstance(anchor, dict) and anchor.get("method") == METHOD_TIMESTAMP


def timestamp_inclusion(anchor: dict[str, Any], envelope_digest_hex: str) -> bytes:
    """The batch root, once the proof puts this envelope under it (no trust needed)."""
    if anchor.get("envelope_sha256") != envelope_digest_hex:
        raise VerificationError("anchor names a different envelope digest than this envelope's")
    root, proof = _batch_proof(anchor.get("batch"))
    # The leaf is the verifier's own digest of the envelope, never the anchor's claim.
    verify_inclusion(bytes.fromhex(envelope_digest_hex), proof, root)
    return root


def anchor_token(anchor: dict[str, Any]) -> bytes:
    token = anchor.get("token")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES * 2:
        raise VerificationError("rfc3161 anchor has no token")
    try:
        return base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("rfc3161 anchor token is not base64") from exc


def verify_timestamp_anchor(anchor: dict[str, Any], envelope_digest_hex: str,
                            trust_anchors_pem: bytes) -> tuple[bool, str]:
    """Inclusion, then the token against the caller's trust anchors. Pure."""
    if not is_timestamp(anchor):
        return False, f"anchor method is not {METHOD_TIMESTAMP}"
    try:
        root = timestamp_inclusion(anchor, envelope_digest_hex)
        info = check_token(anchor_token(anchor), root, trust_anchors_pem)
    except VerificationError as exc:
        return False, exc.diagnostics()
    return True, (f"timestamped {info.gen_time:%Y-%m-%dT%H:%M:%SZ} by {info.tsa_subject} "
                  f"(serial {info.serial_number}), chain {' <- '.join(info.chain)}")
