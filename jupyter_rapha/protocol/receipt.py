"""Receipt v1: an in-toto Statement v1 in a DSSE envelope signed by the edge.

receipt.json holds ``{"format", "envelope", "anchor"}``. The anchor is added after
signing (the transaction cannot exist before the signature it commits to) and names the
SHA-256 of the canonical envelope; verifiers recompute that digest themselves.
Verification here is pure: chain look-ups are done by the caller and passed in as an
``AnchorObservation``; the anchor forms are described in ``anchor_proof``.

Versioning. ``predicateType`` carries the major version (``.../receipt/v1``). Within a
major version fields are only ever added, and verifiers ignore predicate fields they do
not know; ``receipt_version`` names the writer's version as ``1`` or ``"1.MINOR"`` and any
minor of the supported major is accepted. A change that an old verifier would misread
(a field removed, or its meaning changed) gets a new major and a new ``predicateType``,
which old verifiers refuse by name rather than misjudge.

Key ids. The DSSE ``keyid`` is an unauthenticated hint. It is set to the key id that
securesystemslib derives for the edge's Ed25519 key (SHA-256 over the canonical
``{"keytype","scheme","keyval"}``), so stock DSSE verifiers that match signatures to keys
by id accept the envelope as it is. This module ignores the hint and tries the key.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import bounded
from .canonical import canonical_json
from .checks import Verification
from .anchor_proof import AnchorObservation as AnchorObservation  # re-exported: callers import it from here
from .anchor_proof import anchor_matches, anchored_data, audit_head_inclusion, is_pending
from .devices import devices_problem, devices_summary
from .disclosure import DISCLOSURE_SINCE_MINOR, disclosure_problem, disclosure_summary
from .private import MODE_DP, MODE_STANDARD, PRIVACY_SINCE_MINOR, privacy_problem, privacy_summary, state_digest
from .dsse import IN_TOTO_PAYLOAD_TYPE, sign_envelope, verify_envelope
from .errors import BadInput, RaphaError, VerificationError
from .keys import PrivateKey, PublicKey
from .receipt_attestation import check_attestation
from .timestamp import is_timestamp, timestamp_inclusion, verify_timestamp_anchor

RECEIPT_FORMAT = "rapha-receipt/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://jupyter-rapha.org/receipt/v1"
PREDICATE_MAJOR = 1
# 1.1 adds "evidence" (attestation quote, policy, air-gap, scan); 1.2 adds
# "dataset.preprocessing" (the declared pixel transforms and their digest); 1.3 adds
# "disclosure" (the disclosure checks and the release decision), required from 1.3 on;
# 1.4 adds "job.mode" and, for a DP job, "privacy" (DP-SGD's budget, noise, accountant,
# program and parameter digests), required for a DP job from 1.4 on; "1.N" accepted
PREDICATE_VERSION = "1.4"
GATE_OUTCOMES = ("pass", "deny", "absent", "unsafe")
_PREDICATE_KEYS = {"receipt_version", "job", "edge", "dataset", "budget", "settlement",
                   "outputs", "metrics", "gates", "unsafe", "times"}
_VERSION = re.compile(r"([0-9]{1,6})(?:\.[0-9]{1,6})?")
# Faults of a hostile document's shape that no check below anticipated. A check that
# meets one fails (never passes), and the verifier answers instead of raising.
_MALFORMED = (KeyError, IndexError, TypeError, AttributeError, ValueError, OverflowError, RecursionError)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metrics_digest(metrics: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(metrics))


def preprocessing_digest(fields: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``{field: [transform steps]}``: the edge's declared
    preprocessing, as the receipt's ``dataset.preprocessing.sha256`` names it."""
    return sha256_hex(canonical_json(fields))


def envelope_digest(envelope: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(envelope))


def build_statement(predicate: dict[str, Any], weights_sha256: str) -> dict[str, Any]:
    missing = _PREDICATE_KEYS - predicate.keys()
    if missing:
        raise BadInput(f"receipt predicate lacks {', '.join(sorted(missing))}")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "weights.safetensors", "digest": {"sha256": weights_sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def sign_receipt(predicate: dict[str, Any], weights_sha256: str, edge_key: PrivateKey) -> dict[str, Any]:
    """Return an unanchored receipt document."""
    statement = build_statement(predicate, weights_sha256)
    envelope = sign_envelope(canonical_json(statement), IN_TOTO_PAYLOAD_TYPE, edge_key)
    # keyid is outside the PAE, so setting it after signing changes no signed byte.
    for signature in envelope["signatures"]:
        signature["keyid"] = dsse_keyid(edge_key.public)
    return {"format": RECEIPT_FORMAT, "envelope": envelope, "anchor": None}


def dsse_keyid(key: PublicKey) -> str:
    """securesystemslib's default key id for an Ed25519 key (its canonical JSON of this
    all-string dict is byte-identical to RFC 8785)."""
    return sha256_hex(canonical_json({"keytype": "ed25519", "scheme": "ed25519",
                                      "keyval": {"public": key.raw.hex()}}))


def minor_version(value: Any) -> int:
    """3 for ``"1.3"``; 0 for ``1`` or ``"1"`` (call after ``major_version`` accepted it)."""
    if isinstance(value, str) and "." in value:
        return int(value.split(".", 1)[1])
    return 0


def major_version(value: Any) -> int | None:
    """1 for ``1`` or ``"1.3"``; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _VERSION.fullmatch(value)  # ASCII digits: str.isdigit would take "²", which int() refuses
        if match:
            return int(match.group(1))
    return None


def verify_receipt(
    document: Any,
    edge_key: PublicKey,
    *,
    weights: bytes | None = None,
    metrics: dict[str, Any] | None = None,
    anchor: AnchorObservation | None = None,
    min_confirmations: int = 1,
    tsa_trust: bytes | None = None,
    require_tee: bool = False,
    now: datetime | None = None,
) -> Verification:
    """Check a receipt document. Every check is listed; the first failure stops the rest
    that depend on it. ``tsa_trust`` (PEM trust anchors) checks an RFC 3161 anchor. The
    attestation quote the receipt carries is re-checked against this receipt's job and
    ``edge_key`` (``receipt_attestation``): the unsafe software stand-in, or no quote, is
    a WARN, and with ``require_tee`` a failure; ``now`` is the time its certificates are
    judged at (the current time by default).
    Any document at all gets an answer: a malformed one fails a check, it never raises."""
    result = Verification()
    options = _Options(min_confirmations, tsa_trust, require_tee, now or datetime.now(UTC))
    try:
        _verify(document, edge_key, weights, metrics, anchor, options, result)
    except (RaphaError, *_MALFORMED) as exc:
        stage = ("format", "signature", "statement", "outputs", "anchor")[min(len(result.checks), 4)]
        detail = exc.diagnostics() if isinstance(exc, RaphaError) else "a field has the wrong type or is missing"
        result.add(stage, False, f"the receipt is malformed: {detail}")
    return result


@dataclass(frozen=True)
class _Options:
    min_confirmations: int
    tsa_trust: bytes | None
    require_tee: bool
    now: datetime


def _verify(document: Any, edge_key: PublicKey, weights: bytes | None, metrics: dict[str, Any] | None,
            anchor: AnchorObservation | None, options: _Options, result: Verification) -> None:
    if not _check_format(document, result):
        return
    try:
        payload = verify_envelope(document["envelope"], edge_key)
    except RaphaError as exc:
        result.add("signature", False, exc.diagnostics())
        return
    result.add("signature", True, f"signed by edge key {edge_key.key_id}")
    statement = _parse_statement(payload, result)
    if statement is None:
        return
    result.statement = statement
    _check_preprocessing(statement["predicate"], result)
    _check_disclosure(statement["predicate"], result)
    _check_privacy(statement["predicate"], weights, result)
    _check_devices(statement["predicate"], result)
    _check_outputs(statement, weights, metrics, result)
    result.checks.append(check_attestation(statement["predicate"], edge_key, require_tee=options.require_tee,
                                           now=options.now))
    _check_anchor(document, statement["predicate"], anchor, options.min_confirmations, result, options.tsa_trust)


def _check_format(document: Any, result: Verification) -> bool:
    if not isinstance(document, dict) or document.get("format") != RECEIPT_FORMAT:
        return result.add("format", False, f"not a {RECEIPT_FORMAT} document")
    if not isinstance(document.get("envelope"), dict):
        return result.add("format", False, "receipt has no envelope")
    try:
        envelope_digest(document["envelope"])  # the anchor names this digest; it must exist
    except RaphaError as exc:
        return result.add("format", False, f"the envelope has no canonical JSON form: {exc.diagnostics()}")
    return result.add("format", True, RECEIPT_FORMAT)


def _parse_statement(payload: bytes, result: Verification) -> dict[str, Any] | None:
    try:
        statement = bounded.loads(payload, what="signed payload")
    except RaphaError as exc:
        result.add("statement", False, exc.diagnostics())
        return None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        result.add("statement", False, "signed payload is not an in-toto Statement v1")
        return None
    if statement.get("predicateType") != PREDICATE_TYPE:
        result.add("statement", False, f"predicate type is not {PREDICATE_TYPE}")
        return None
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict) or _PREDICATE_KEYS - predicate.keys():
        result.add("statement", False, "receipt predicate is incomplete")
        return None
    if major_version(predicate.get("receipt_version")) != PREDICATE_MAJOR:
        version = str(predicate.get("receipt_version"))[:16]
        result.add("statement", False, f"receipt version {version!r} is not supported")
        return None
    problem = _shape_problem(predicate)
    if problem:
        result.add("statement", False, f"receipt predicate is malformed: {problem}")
        return None
    result.add("statement", True, f"job {str(predicate['job'].get('id'))[:64]}")
    return statement


def _check_preprocessing(predicate: dict[str, Any], result: Verification) -> None:
    """A receipt from an edge that preprocessed the records (receipt 1.2) lists the steps
    and their digest; the digest must be the one of the steps listed. Older receipts and
    fields with the default scaling carry no entry, and get no line."""
    dataset = predicate.get("dataset")
    entry = dataset.get("preprocessing") if isinstance(dataset, dict) else None
    if entry is None:
        return
    fields = entry.get("fields") if isinstance(entry, dict) else None
    try:
        matches = isinstance(fields, dict) and bool(fields) and preprocessing_digest(fields) == entry.get("sha256")
    except BadInput:
        matches = False
    if not matches or not isinstance(fields, dict):
        result.add("preprocessing", False, "the preprocessing digest differs from the steps the receipt lists")
        return
    steps = "; ".join(f"{name}: {', '.join(_step_name(s) for s in (items if isinstance(items, list) else []))}"
                      for name, items in sorted(fields.items()))
    result.add("preprocessing", True, f"{steps} (sha256 {entry['sha256'][:16]}…)")


def _check_disclosure(predicate: dict[str, Any], result: Verification) -> None:
    """From receipt 1.3 on, the outputs left only after the disclosure checks and a
    release decision, and the receipt says so; a 1.3 receipt without it fails (a receipt
    that claims a version whose outputs are checked must show the checks). Older
    receipts get no line."""
    section = predicate.get("disclosure")
    if section is None and minor_version(predicate["receipt_version"]) < DISCLOSURE_SINCE_MINOR:
        return
    problem = disclosure_problem(section)
    if problem or not isinstance(section, dict):
        result.add("disclosure", False, problem or "the receipt has no disclosure section")
        return
    result.add("disclosure", True, disclosure_summary(section))


def _check_privacy(predicate: dict[str, Any], weights: bytes | None, result: Verification) -> None:
    """From receipt 1.4 on, a DP job (``job.mode`` "dp") carries a well-formed privacy
    section and a standard job none; with the weights given, they must be the trainer's own
    parameters (its recorded digest). Older receipts and standard jobs get no line."""
    section, mode = predicate.get("privacy"), predicate["job"].get("mode")
    if minor_version(predicate["receipt_version"]) < PRIVACY_SINCE_MINOR:
        if section is not None:
            result.add("privacy", False, "a receipt older than 1.4 carries a privacy section")
        return
    if mode not in (MODE_DP, MODE_STANDARD, None):
        result.add("privacy", False, "the receipt names an unknown job mode")
        return
    if mode != MODE_DP:  # no mode: a standard job, as every receipt before DP mode
        if section is not None:
            result.add("privacy", False, "a standard job's receipt carries a privacy section")
        return
    problem = privacy_problem(section)
    if problem or not isinstance(section, dict):
        result.add("privacy", False, problem or "the receipt has no privacy section")
        return
    if weights is not None:
        try:
            own = state_digest(weights) == section["parameters_sha256"]
        except (ValueError, KeyError, TypeError, struct.error):
            own = False
        if not own:
            result.add("privacy", False, "the weights are not the parameters the edge's DP trainer recorded")
            return
    result.add("privacy", True, privacy_summary(section))


def _check_devices(predicate: dict[str, Any], result: Verification) -> None:
    """The GPUs the job was granted (``devices.py``), where it was granted any: an added
    field of 1.x, so a receipt without it (a CPU job, an older edge) gets no line."""
    section = predicate.get("devices")
    if section is None:
        return
    problem = devices_problem(section)
    if problem:
        result.add("devices", False, problem)
        return
    result.add("devices", True, devices_summary(section))


def _step_name(step: Any) -> str:
    return str(step.get("op")) if isinstance(step, dict) else "?"


def _shape_problem(predicate: dict[str, Any]) -> str:
    """The fields the checks below read, with the types they read them as ("" if fine)."""
    for name in ("job", "edge", "outputs"):
        if not isinstance(predicate[name], dict):
            return f"'{name}' is not an object"
    weights, metrics = predicate["outputs"].get("weights"), predicate["outputs"].get("metrics")
    if not (isinstance(weights, dict) and isinstance(weights.get("bytes"), int)):
        return "'outputs.weights.bytes' is not a whole number"
    if not (isinstance(metrics, dict) and isinstance(metrics.get("sha256"), str)):
        return "'outputs.metrics.sha256' is not a string"
    if job_processes(predicate) is None:
        return "'job.processes' is not a whole number above 1"
    return ""


def job_processes(predicate: dict[str, Any]) -> int | None:
    """The job's process count (``job.processes``, there only for more than one: ranks of
    one torch.distributed group under one sandbox); 1 without it; None when malformed."""
    job = predicate.get("job")
    if not isinstance(job, dict) or "processes" not in job:
        return 1
    value = job["processes"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        return None
    return value


def _subject_digest(statement: dict[str, Any]) -> str | None:
    subjects = statement.get("subject")
    if isinstance(subjects, list) and subjects and isinstance(subjects[0], dict):
        digest = subjects[0].get("digest", {})
        return digest.get("sha256") if isinstance(digest, dict) else None
    return None


def _check_outputs(statement: dict[str, Any], weights: bytes | None,
                   metrics: dict[str, Any] | None, result: Verification) -> None:
    predicate = statement["predicate"]
    claimed = _subject_digest(statement)
    if weights is not None:
        actual = sha256_hex(weights)
        result.add("weights", actual == claimed and predicate["outputs"]["weights"]["bytes"] == len(weights),
                   f"weights sha256 {actual[:16]}… {'matches' if actual == claimed else 'differs from'} the receipt")
    if metrics is not None:
        try:
            actual = metrics_digest(metrics)
        except RaphaError as exc:
            result.add("metrics", False, f"the metrics given have no canonical JSON form: {exc.diagnostics()}")
            return
        expected = predicate["outputs"]["metrics"]["sha256"]
        result.add("metrics", actual == expected and _same_json(metrics, predicate["metrics"]),
                   f"metrics sha256 {actual[:16]}… {'matches' if actual == expected else 'differs from'} the receipt")


def _same_json(mine: Any, claimed: Any) -> bool:
    try:
        return canonical_json(mine) == canonical_json(claimed)
    except RaphaError:  # the receipt's copy has no canonical form (NaN, huge integer): not the same
        return False


def _check_anchor(document: dict[str, Any], predicate: dict[str, Any], observation: AnchorObservation | None,
                  min_confirmations: int, result: Verification, tsa_trust: bytes | None = None) -> None:
    anchor = document.get("anchor")
    if anchor is None:
        result.skip("anchor", "receipt is not anchored")
        return
    digest = envelope_digest(document["envelope"])
    if not isinstance(anchor, dict) or anchor.get("envelope_sha256") != digest:
        result.add("anchor", False, "anchor names a different envelope digest than this envelope's")
        return
    if is_pending(anchor):
        result.wait("anchor", "anchor pending: the edge will anchor this receipt when its chain is reachable; "
                              "fetch the receipt again later")
        return
    if is_timestamp(anchor):
        _check_timestamp(anchor, digest, tsa_trust, result)
        return
    try:
        data = anchored_data(anchor, digest)
    except VerificationError as exc:
        result.add("inclusion", False, exc.diagnostics())
        return
    if anchor.get("method") == "evm-batch":
        batch = anchor["batch"]
        result.add("inclusion", True,
                   f"leaf {batch['index']} of {batch['size']} under batch root {batch['root'][:12]}…")
        _check_audit_head(anchor, result)
    if observation is None:
        result.skip("anchor", "chain not consulted (pass an RPC endpoint to check the anchor)")
        return
    result.add("anchor", *anchor_matches(anchor, predicate, observation, data, min_confirmations))


def _check_timestamp(anchor: dict[str, Any], digest: str, tsa_trust: bytes | None, result: Verification) -> None:
    """An RFC 3161 anchor: the inclusion proof offline, the token against the TSA trust
    anchors the verifier chose (never ones the receipt brings along)."""
    try:
        timestamp_inclusion(anchor, digest)
    except VerificationError as exc:
        result.add("inclusion", False, exc.diagnostics())
        return
    batch = anchor["batch"]
    result.add("inclusion", True, f"leaf {batch['index']} of {batch['size']} under batch root {batch['root'][:12]}…")
    _check_audit_head(anchor, result)
    if tsa_trust is None:
        result.skip("anchor", "RFC 3161 timestamp not checked (pass the TSA's trust anchor certificate)")
        return
    result.add("anchor", *verify_timestamp_anchor(anchor, digest, tsa_trust))


def _check_audit_head(anchor: dict[str, Any], result: Verification) -> None:
    """The edge's audit log head that the same anchored root commits to (newer edges)."""
    try:
        head = audit_head_inclusion(anchor)
    except VerificationError as exc:
        result.add("audit head", False, exc.diagnostics())
        return
    if head is not None:
        result.add("audit head", True, f"the batch root commits to the edge's audit log at {head[0]} entries, "
                                       f"head {head[1][:12]}…")


def _anchor_matches(anchor: dict[str, Any], predicate: dict[str, Any], obs: AnchorObservation,
                    digest: str, min_confirmations: int) -> tuple[bool, str]:
    """The chain comparison for an anchor naming ``digest``'s envelope (any method)."""
    try:
        data = anchored_data(anchor, digest)
    except VerificationError as exc:
        return False, exc.diagnostics()
    return anchor_matches(anchor, predicate, obs, data, min_confirmations)
