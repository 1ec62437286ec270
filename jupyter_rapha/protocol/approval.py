"""Data stewards' run approvals as signed statements (a job waits for them before it runs).

A dataset's policy may ask a human to approve a job before its code runs
(``run_approval``: ``one`` or ``two_person``). A hospital's data steward approves or
rejects it with a DSSE envelope (payload type ``APPROVAL_PAYLOAD_TYPE``) over the RFC 8785
encoding of::

    {"_type": STATEMENT_TYPE, "edge_key_id", "job_id", "request_sha256",
     "decision": "approve" | "reject", "reason", "steward_key_id", "signed_at", "nonce"}

signed by the steward's own Ed25519 key. It is shaped like an output checker's release
decision (``protocol/review.py``), with the job's request digest in place of the outputs':

- ``edge_key_id`` and ``job_id``: good for one job at one edge.
- ``request_sha256``: the SHA-256 of the researcher's signed request, the job's code and
  spec as submitted; the steward approves exactly what they were shown, and a statement
  about another request (the same id reused elsewhere) does not cover this one.
- ``signed_at`` and ``nonce``: accepted only within ``MAX_SKEW_SECONDS`` of the edge's
  clock; the edge refuses a statement it has seen before (a replay).

Verification is pure (bytes and keys in, a ``RunApproval`` out) and parses what was
signed, never a re-encoding of it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from . import bounded
from .canonical import canonical_json
from .dsse import sign_envelope, verify_envelope
from .errors import BadInput, BadSignature, Expired, GateDenied, VerificationError
from .keys import PrivateKey, PublicKey
from .review import DECISIONS, MAX_SKEW_SECONDS, MAX_STATEMENT_BYTES, MAX_TIMESTAMP, check_reason
from .review import load_envelope as load_statement

APPROVAL_PAYLOAD_TYPE = "application/vnd.jupyter-rapha.run-approval+json"
STATEMENT_TYPE = "https://jupyter-rapha.org/run-approval/v1"
_KEYS = {"_type", "edge_key_id", "job_id", "request_sha256", "decision", "reason", "steward_key_id",
         "signed_at", "nonce"}
_HEX = {"edge_key_id": re.compile(r"[0-9a-f]{32}"), "steward_key_id": re.compile(r"[0-9a-f]{32}"),
        "job_id": re.compile(r"[0-9a-f]{32}"), "request_sha256": re.compile(r"[0-9a-f]{64}"),
        "nonce": re.compile(r"[0-9a-f]{32}")}

__all__ = ["APPROVAL_PAYLOAD_TYPE", "DECISIONS", "MAX_SKEW_SECONDS", "MAX_STATEMENT_BYTES", "STATEMENT_TYPE",
           "ApprovalRefused", "ApprovalSubject", "RunApproval", "load_envelope", "sign_approval",
           "verify_approval"]


class ApprovalRefused(GateDenied):
    """A steward's decision the edge does not take: not a steward, the job's own
    researcher, counted already, or a job that does not wait for approval. Nothing changes."""

    gate = "approval"


@dataclass(frozen=True)
class ApprovalSubject:
    """What a statement must name to be about this job's request at this edge."""

    edge_key_id: str
    job_id: str
    request_sha256: str


@dataclass(frozen=True)
class RunApproval:
    """A verified decision. ``statement_sha256`` is the SHA-256 of the signed payload
    bytes: it names the statement in the audit log and the receipt, and the edge refuses a
    second statement with the same digest (a replay)."""

    subject: ApprovalSubject
    steward_key_id: str
    decision: str
    reason: str
    signed_at: int
    nonce: str
    statement_sha256: str
    envelope: dict[str, Any]

    @property
    def job_id(self) -> str:
        return self.subject.job_id

    @property
    def approves(self) -> bool:
        return self.decision == "approve"

    @property
    def reason_sha256(self) -> str:
        return hashlib.sha256(self.reason.encode("utf-8")).hexdigest()

    def summary(self) -> dict[str, Any]:
        """JSON-safe: for the audit log, ``approval show`` and the receipt."""
        return {"steward_key_id": self.steward_key_id, "decision": self.decision, "reason": self.reason,
                "reason_sha256": self.reason_sha256, "signed_at": self.signed_at,
                "statement_sha256": self.statement_sha256}


def sign_approval(key: PrivateKey, subject: ApprovalSubject, decision: str, reason: str, now: int,
                  nonce: str | None = None) -> dict[str, Any]:
    """The steward's side: a DSSE envelope holding the decision, signed with ``key``."""
    if decision not in DECISIONS:
        raise BadInput(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    statement = {"_type": STATEMENT_TYPE, "edge_key_id": subject.edge_key_id, "job_id": subject.job_id,
                 "request_sha256": subject.request_sha256, "decision": decision, "reason": check_reason(reason),
                 "steward_key_id": key.key_id, "signed_at": now, "nonce": nonce or secrets.token_hex(16)}
    _check_fields(statement)
    return sign_envelope(canonical_json(statement), APPROVAL_PAYLOAD_TYPE, key)


def load_envelope(data: bytes) -> dict[str, Any]:
    """Bounded parsing of a statement as it arrives (an admin request body, a file)."""
    return load_statement(data, "run approval statement")


def verify_approval(envelope: Any, key: PublicKey, expected: ApprovalSubject, now: int,
                    max_skew: int = MAX_SKEW_SECONDS) -> RunApproval:
    """Return the decision if ``key`` signed it, it names ``expected`` and is fresh.

    Raises ``BadSignature`` (forged, or another key's), ``BadInput`` (malformed, or about
    another job, edge or request) or ``Expired``. Replays are the caller's to refuse."""
    if not isinstance(envelope, dict) or envelope.get("payloadType") != APPROVAL_PAYLOAD_TYPE:
        raise BadInput(f"a run approval statement is a DSSE envelope of payloadType {APPROVAL_PAYLOAD_TYPE}")
    try:
        payload = verify_envelope(envelope, key)
    except VerificationError as exc:  # no signature at all: as unauthenticated as a forged one
        raise BadSignature("the run approval statement carries no signature") from exc
    statement = bounded.loads(payload, what="run approval statement payload", max_depth=2)
    if not isinstance(statement, dict):
        raise BadInput("the run approval statement's payload is not a JSON object")
    _check_fields(statement)
    if statement["steward_key_id"] != key.key_id:
        raise BadInput("the statement names another steward key than the one that signed it")
    _check_subject(statement, expected)
    if abs(now - statement["signed_at"]) > max_skew:
        raise Expired(f"the approval was signed more than {max_skew} s from the edge's clock",
                      hint="sign it afresh, and check the clock of the machine that signed it")
    return RunApproval(expected, key.key_id, statement["decision"], statement["reason"], statement["signed_at"],
                       statement["nonce"], hashlib.sha256(payload).hexdigest(), envelope)


def _check_fields(statement: dict[str, Any]) -> None:
    if set(statement) != _KEYS:
        missing, extra = sorted(_KEYS - set(statement)), sorted(set(statement) - _KEYS)
        raise BadInput("run approval statement fields are wrong" + (f"; missing {', '.join(missing)}" if missing
                                                                    else "")
                       + (f"; unknown {', '.join(extra)}" if extra else ""))
    if statement["_type"] != STATEMENT_TYPE:
        raise BadInput(f"run approval statement _type must be {STATEMENT_TYPE}")
    for name, pattern in _HEX.items():
        if not isinstance(statement[name], str) or not pattern.fullmatch(statement[name]):
            raise BadInput(f"run approval statement {name} must be lowercase hex of the right length")
    if statement["decision"] not in DECISIONS:
        raise BadInput(f"run approval statement decision must be one of {', '.join(DECISIONS)}")
    signed_at = statement["signed_at"]
    if not isinstance(signed_at, int) or isinstance(signed_at, bool) or not 0 <= signed_at <= MAX_TIMESTAMP:
        raise BadInput("run approval statement signed_at must be Unix seconds, a whole number")
    if check_reason(statement["reason"]) != statement["reason"]:
        raise BadInput("run approval statement reason has surrounding whitespace")


def _check_subject(statement: dict[str, Any], expected: ApprovalSubject) -> None:
    if statement["edge_key_id"] != expected.edge_key_id:
        raise BadInput("the run approval statement is for another edge", hint="sign it for this edge's key")
    if statement["job_id"] != expected.job_id:
        raise BadInput(f"the run approval statement is for job {statement['job_id']}, not {expected.job_id}")
    if statement["request_sha256"] != expected.request_sha256:
        raise BadInput("the run approval statement is for another request than this job's",
                       hint="run 'rapha-edge approval show JOB' again and decide on what it shows")
