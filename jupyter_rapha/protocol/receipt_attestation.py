"""Re-checking the attestation quote a receipt carries (receipt 1.1 ``evidence.attestation``).

The edge's attestation gate verified a quote before the job ran; a reviewer should not
have to take the edge's word for that. From the signed predicate alone this module
decodes the quote, checks it against its recorded digest, recomputes the report data from
the recorded commitment and checks that the commitment names THIS receipt's request (its
``job.request_sha256``, which covers the signed job spec and so its nonce) and edge key.
Without that binding an edge could paste one good quote, taken once, into every receipt.

Outcomes of the one ``attestation`` check: ``pass`` (a TDX/SGX quote bound to this job),
``warn`` (the unsafe software stand-in, bound and signed by the edge key but with no
hardware evidence: demo only), ``fail`` (anything else; with ``require_tee`` also the
stand-in and a receipt without a quote).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from typing import Any

from .attestation import report_data_for, verify_quote
from .checks import Check
from .errors import RaphaError
from .keys import PublicKey

NAME = "attestation"
UNSAFE_TEXT = "UNSAFE software stand-in (demo only)"


def check_attestation(predicate: dict[str, Any], edge_key: PublicKey, *, require_tee: bool = False,
                      now: datetime | None = None) -> Check:
    evidence = predicate.get("evidence")
    attestation = evidence.get("attestation") if isinstance(evidence, dict) else None
    if not isinstance(attestation, dict) or not attestation.get("quote"):
        why = ("the edge recorded no attestation quote for this job" if isinstance(evidence, dict)
               else "the receipt predates attestation evidence (receipt 1.0): no quote to re-check")
        return Check(NAME, "fail" if require_tee else "warn",
                     why + ("; --require-tee needs one" if require_tee else ""))
    try:
        return _check_quote(attestation, predicate, edge_key, require_tee, now or datetime.now(UTC))
    except _Refused as exc:
        return Check(NAME, "fail", str(exc))


class _Refused(Exception):
    pass


def _check_quote(attestation: dict[str, Any], predicate: dict[str, Any], edge_key: PublicKey,
                 require_tee: bool, now: datetime) -> Check:
    quote = _decode(attestation)
    commitment = attestation.get("commitment")
    if not isinstance(commitment, dict):
        raise _Refused("the receipt carries a quote without the commitment it is bound to")
    _check_binding(commitment, predicate, edge_key)
    try:
        expected = report_data_for(commitment)
    except RaphaError as exc:
        raise _Refused(f"the recorded commitment is malformed: {exc.diagnostics()}") from exc
    verification = verify_quote(quote, expected_report_data=expected, now=now, allowlist=None, software_key=edge_key)
    failures = verification.failures()
    if failures:
        raise _Refused("the quote does not verify: " + "; ".join(failures))
    if attestation.get("backend") != verification.kind:
        raise _Refused(f"the receipt names backend {attestation.get('backend')!r} but the quote is {verification.kind}")
    if verification.unsafe:
        detail = f"{UNSAFE_TEXT}: bound to this job, signed by edge key {edge_key.key_id}; no hardware evidence"
        return Check(NAME, "fail" if require_tee else "warn",
                     detail + ("; --require-tee refuses it" if require_tee else ""))
    return Check(NAME, "pass", f"{verification.kind.upper()} quote v{verification.version} bound to this job; "
                               f"TCB {attestation.get('tcb_status', 'unknown')} as the edge reported "
                               "(collateral and measurements not re-checked here)")


def _decode(attestation: dict[str, Any]) -> bytes:
    try:
        quote = base64.b64decode(str(attestation["quote"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Refused("the recorded quote is not base64") from exc
    if hashlib.sha256(quote).hexdigest() != attestation.get("quote_sha256"):
        raise _Refused("the recorded quote does not match its recorded digest")
    return quote


def _check_binding(commitment: dict[str, Any], predicate: dict[str, Any], edge_key: PublicKey) -> None:
    job, edge = _section(predicate, "job"), _section(predicate, "edge")
    request = job.get("request_sha256")
    if not request or commitment.get("request_sha256") != request:
        raise _Refused("the quote is bound to another request than this receipt's job (request_sha256 differs)")
    if not commitment.get("job_nonce"):
        raise _Refused("the quote's commitment names no job nonce")
    if commitment.get("edge_key_id") != edge.get("key_id") or commitment.get("edge_key_id") != edge_key.key_id:
        raise _Refused("the quote is bound to another edge key than the one that signed this receipt")


def _section(predicate: dict[str, Any], name: str) -> dict[str, Any]:
    value = predicate.get(name)
    return value if isinstance(value, dict) else {}
