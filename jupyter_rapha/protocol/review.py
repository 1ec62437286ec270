"""Output checkers' release decisions as signed statements (S5, S7).

A hospital's output checker approves or rejects the release of a held job's outputs. The
decision is a DSSE envelope (payload type ``DECISION_PAYLOAD_TYPE``) over the RFC 8785
encoding of::

    {"_type": STATEMENT_TYPE, "edge_key_id", "job_id", "outputs_sha256",
     "decision": "approve" | "reject", "reason", "checker_key_id", "signed_at", "nonce"}

signed by the checker's own Ed25519 key, so the decision authenticates itself: the edge
that receives it (over any channel) verifies it against the key the hospital registered
for that checker, and the audit log and the receipt keep the signed bytes' digest.

What each field defends against:
- ``edge_key_id`` and ``job_id``: a statement is good for one job at one edge; it cannot
  be carried to another job or to another edge that reuses the id.
- ``outputs_sha256``: the checker approves the outputs they were shown (``rapha-edge
  release show``); outputs that differ from those are not covered by the approval.
- ``signed_at`` and ``nonce``: a statement is accepted only within ``MAX_SKEW_SECONDS``
  of the edge's clock, and the edge refuses one it has seen before (a replay).

Verification is pure (bytes and keys in, a ``ReviewDecision`` out) and parses what was
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

DECISION_PAYLOAD_TYPE = "application/vnd.jupyter-rapha.release-decision+json"
STATEMENT_TYPE = "https://jupyter-rapha.org/release-decision/v1"
DECISIONS = ("approve", "reject")
MAX_SKEW_SECONDS = 300
MAX_REASON_CHARS = 2000
MAX_STATEMENT_BYTES = 16 * 1024
MAX_TIMESTAMP = 2**40
_KEYS = {"_type", "edge_key_id", "job_id", "outputs_sha256", "decision", "reason", "checker_key_id",
         "signed_at", "nonce"}
_HEX = {"edge_key_id": re.compile(r"[0-9a-f]{32}"), "checker_key_id": re.compile(r"[0-9a-f]{32}"),
        "job_id": re.compile(r"[0-9a-f]{32}"), "outputs_sha256": re.compile(r"[0-9a-f]{64}"),
        "nonce": re.compile(r"[0-9a-f]{32}")}
# A reason is read by people (the researcher for a reject, a reviewer of the receipt):
# printable text and newlines, nothing that moves a terminal's cursor or hides text.
_REASON_FORBIDDEN = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class ReviewRefused(GateDenied):
    """A checker's decision the edge does not take: not a checker, the job's own
    researcher, counted already, or a job that is not held. Nothing changes."""

    gate = "review"


@dataclass(frozen=True)
class DecisionSubject:
    """What a statement must name to be about this job's held outputs at this edge."""

    edge_key_id: str
    job_id: str
    outputs_sha256: str


@dataclass(frozen=True)
class ReviewDecision:
    """A verified decision. ``statement_sha256`` is the SHA-256 of the signed payload
    bytes: it names this statement in the audit log and the receipt, and the edge refuses
    a second statement with the same digest (a replay)."""

    subject: DecisionSubject
    checker_key_id: str
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
        """JSON-safe: for the audit log, ``release show`` and the receipt's disclosure section."""
        return {"checker_key_id": self.checker_key_id, "decision": self.decision, "reason": self.reason,
                "reason_sha256": self.reason_sha256, "signed_at": self.signed_at,
                "statement_sha256": self.statement_sha256}


def check_reason(reason: Any) -> str:
    """The reason a checker gives: required, at most MAX_REASON_CHARS, printable."""
    if not isinstance(reason, str) or not reason.strip():
        raise BadInput("a decision needs a reason: say why the outputs may or may not leave (--reason TEXT)")
    if len(reason) > MAX_REASON_CHARS:
        raise BadInput(f"the reason is {len(reason)} characters; at most {MAX_REASON_CHARS}")
    bad = _REASON_FORBIDDEN.search(reason)
    if bad:
        raise BadInput(f"the reason holds a control or direction character (U+{ord(bad.group()):04X}); "
                       "write plain text (newlines are fine)")
    return reason.strip()


def sign_decision(key: PrivateKey, subject: DecisionSubject, decision: str, reason: str, now: int,
                  nonce: str | None = None) -> dict[str, Any]:
    """The checker's side: a DSSE envelope holding the decision, signed with ``key``."""
    if decision not in DECISIONS:
        raise BadInput(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    statement = {"_type": STATEMENT_TYPE, "edge_key_id": subject.edge_key_id, "job_id": subject.job_id,
                 "outputs_sha256": subject.outputs_sha256, "decision": decision, "reason": check_reason(reason),
                 "checker_key_id": key.key_id, "signed_at": now, "nonce": nonce or secrets.token_hex(16)}
    _check_fields(statement)
    return sign_envelope(canonical_json(statement), DECISION_PAYLOAD_TYPE, key)


def load_envelope(data: bytes, what: str = "decision statement") -> dict[str, Any]:
    """Bounded parsing of a signed statement as it arrives (an admin request body, a file);
    ``what`` names it in the error (run approvals use it too)."""
    envelope = bounded.loads(data, what=what, max_bytes=MAX_STATEMENT_BYTES, max_depth=8)
    if not isinstance(envelope, dict):
        raise BadInput(f"a {what} is a DSSE envelope: a JSON object")
    return envelope


def verify_decision(envelope: Any, key: PublicKey, expected: DecisionSubject, now: int,
                    max_skew: int = MAX_SKEW_SECONDS) -> ReviewDecision:
    """Return the decision if ``key`` signed it, it names ``expected`` and is fresh.

    Raises ``BadSignature`` (forged, or another key's), ``BadInput`` (malformed, or about
    another job, edge or set of outputs) or ``Expired``. Replays are the caller's store."""
    if not isinstance(envelope, dict) or envelope.get("payloadType") != DECISION_PAYLOAD_TYPE:
        raise BadInput(f"a decision statement is a DSSE envelope of payloadType {DECISION_PAYLOAD_TYPE}")
    try:
        payload = verify_envelope(envelope, key)
    except VerificationError as exc:  # no signature at all: as unauthenticated as a forged one
        raise BadSignature("the decision statement carries no signature") from exc
    statement = bounded.loads(payload, what="decision statement payload", max_depth=2)
    if not isinstance(statement, dict):
        raise BadInput("the decision statement's payload is not a JSON object")
    _check_fields(statement)
    if statement["checker_key_id"] != key.key_id:
        raise BadInput("the statement names another checker key than the one that signed it")
    _check_subject(statement, expected)
    if abs(now - statement["signed_at"]) > max_skew:
        raise Expired(f"the decision was signed more than {max_skew} s from the edge's clock",
                      hint="sign it afresh, and check the clock of the machine that signed it")
    return ReviewDecision(expected, key.key_id, statement["decision"], statement["reason"], statement["signed_at"],
                          statement["nonce"], hashlib.sha256(payload).hexdigest(), envelope)


def _check_fields(statement: dict[str, Any]) -> None:
    if set(statement) != _KEYS:
        missing, extra = sorted(_KEYS - set(statement)), sorted(set(statement) - _KEYS)
        raise BadInput("decision statement fields are wrong" + (f"; missing {', '.join(missing)}" if missing else "")
                       + (f"; unknown {', '.join(extra)}" if extra else ""))
    if statement["_type"] != STATEMENT_TYPE:
        raise BadInput(f"decision statement _type must be {STATEMENT_TYPE}")
    for name, pattern in _HEX.items():
        if not isinstance(statement[name], str) or not pattern.fullmatch(statement[name]):
            raise BadInput(f"decision statement {name} must be lowercase hex of the right length")
    if statement["decision"] not in DECISIONS:
        raise BadInput(f"decision statement decision must be one of {', '.join(DECISIONS)}")
    signed_at = statement["signed_at"]
    if not isinstance(signed_at, int) or isinstance(signed_at, bool) or not 0 <= signed_at <= MAX_TIMESTAMP:
        raise BadInput("decision statement signed_at must be Unix seconds, a whole number")
    if check_reason(statement["reason"]) != statement["reason"]:
        raise BadInput("decision statement reason has surrounding whitespace")


def _check_subject(statement: dict[str, Any], expected: DecisionSubject) -> None:
    if statement["edge_key_id"] != expected.edge_key_id:
        raise BadInput("the decision statement is for another edge", hint="sign it for this edge's key")
    if statement["job_id"] != expected.job_id:
        raise BadInput(f"the decision statement is for job {statement['job_id']}, not {expected.job_id}")
    if statement["outputs_sha256"] != expected.outputs_sha256:
        raise BadInput("the decision statement is for other outputs than this job holds",
                       hint="run 'rapha-edge release show JOB' again and decide on what it shows")
