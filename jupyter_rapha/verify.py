"""Receipt verification with its I/O: files, keys and the chain (S6).

The pure check is ``jupyter_rapha.protocol.receipt.verify_receipt``; this module finds
its inputs. Defaults lean strict: an anchor nobody looked at is not a pass unless the
caller says ``offline``, and an RPC endpoint is only ever the one the caller names,
never one read from the receipt (a forged receipt would name a forged chain).

Outcomes: ``ok``; ``pending`` (every check that ran passed, but the edge has not anchored
the receipt yet: fetch it again later); ``failed``. ``--offline`` checks the signature,
the statement, the outputs beside the receipt and a batch anchor's inclusion proof.
A weights or metrics file that is not there is a SKIP line that refuses an overall OK,
also offline, unless the caller says it means to skip it (``skip_outputs``): a check must
never pass by disappearing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

from .protocol import bounded
from .protocol.errors import RaphaError
from .protocol.keys import PublicKey, load_public_key
from .protocol.checks import Check, Verification
from .protocol.contract import OUTPUT_LIMITS
from .protocol.receipt import AnchorObservation, verify_receipt

MAX_RECEIPT_BYTES = 16 * 2**20  # a receipt is a few kilobytes; a hostile file may be anything
MAX_METRICS_BYTES = OUTPUT_LIMITS.released_metrics_bytes
EDGE_KEY_FILE = "edge.pub"
WEIGHTS_FILE = "weights.safetensors"
METRICS_FILE = "metrics.json"
NO_KEY = "no edge public key: pass --edge-key"
NO_RPC = "pass --rpc URL to check the anchor, or --offline"
NO_TSA = "pass --tsa-cert PEM to check the timestamp, or --offline"
OUTPUT_CHECKS = {"weights": WEIGHTS_FILE, "metrics": METRICS_FILE}
Observer = Callable[[str, str], AnchorObservation]


@dataclass
class VerificationReport(Verification):
    """A ``Verification`` plus where its inputs came from and whether skips are allowed."""

    source: str = ""
    notes: list[str] = field(default_factory=list)
    offline: bool = False
    skip_outputs: frozenset[str] = frozenset()  # "weights", "metrics": the caller accepts them unchecked

    @property
    def passed(self) -> bool:
        return bool(self.checks) and not self.failures() and not any(c.status == "pending" for c in self.checks)

    @property
    def outcome(self) -> str:
        """"ok", "pending" (only the anchor is still to come) or "failed"."""
        if self.passed:
            return "ok"
        return "pending" if self.pending and not self.failures() else "failed"

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail" or (c.status == "skipped" and not self._may_skip(c))]

    def _may_skip(self, check: Check) -> bool:
        if check.name in OUTPUT_CHECKS:
            return check.name in self.skip_outputs
        return self.offline


def read_edge_key(value: str | Path) -> PublicKey:
    """``ed25519:BASE64``, PEM text, or a path to a file holding either."""
    text = str(value).strip()
    if not text.startswith(("ed25519:", "-----BEGIN")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise RaphaError(f"edge key {text!r} is neither 'ed25519:BASE64' nor a readable file")
        text = path.read_text("utf-8")
    return load_public_key(text)


def verify_document(document: Any, edge_key: PublicKey | None, *, weights: bytes | None = None,
                    metrics: dict[str, Any] | None = None, rpc_url: str | None = None,
                    offline: bool = False, observe: Observer | None = None,
                    min_confirmations: int = 1, require_tee: bool = False,
                    tsa_trust: bytes | None = None) -> VerificationReport:
    """Verify a receipt held in memory; the anchor is looked up at ``rpc_url`` if given,
    and an RFC 3161 timestamp anchor is checked against the ``tsa_trust`` PEM certificates.
    The pure ``verify_receipt`` re-checks the attestation quote in the receipt too; the
    unsafe software stand-in is a WARN line, or a failure with ``require_tee``."""
    report = VerificationReport(offline=offline)
    if edge_key is None:
        report.add("signature", False, NO_KEY)
        return report
    observation, chain_error = _observe(document, rpc_url, observe, offline)
    base = verify_receipt(document, edge_key, weights=weights, metrics=metrics, anchor=observation,
                          min_confirmations=min_confirmations, tsa_trust=tsa_trust, require_tee=require_tee)
    report.checks, report.statement = base.checks, base.statement
    _settle_anchor(report, rpc_url, offline, chain_error, _is_timestamp(document))
    _check_settlement(report, document, rpc_url, offline)
    return report


def _check_settlement(report: VerificationReport, document: Any, rpc_url: str | None, offline: bool) -> None:
    """A receipt naming an escrow claim (``settlement_claim``) gets a ``settlement`` line:
    the claim read from the chain at ``rpc_url`` against the signed statement's job and
    meter and the envelope's digest. Unchecked is a skip that only ``offline`` allows."""
    claim = document.get("settlement_claim") if isinstance(document, dict) else None
    if claim is None:
        return
    predicate = (report.statement or {}).get("predicate")
    if not isinstance(claim, dict) or not isinstance(predicate, dict):
        report.add("settlement", False, "the receipt's settlement claim cannot be checked: no verified statement"
                   if isinstance(claim, dict) else "the receipt's settlement claim is malformed")
        return
    if offline:
        report.checks.append(Check("settlement", "skipped", "offline: chain not consulted"))
        return
    if not rpc_url:
        report.checks.append(Check("settlement", "skipped", "pass --rpc URL to check the settlement claim"))
        return
    from .chain import observe_claim
    from .protocol.escrow import claim_matches
    from .protocol.receipt import envelope_digest

    try:
        observation = observe_claim(rpc_url, str(claim.get("tx_hash")))
        ok, detail = claim_matches(claim, job_id=str(predicate["job"]["id"]),
                                   envelope_sha256=envelope_digest(document["envelope"]),
                                   metered_records=int(predicate["settlement"]["records"]), obs=observation)
    except RaphaError as exc:  # an unreachable chain is a failed check, never a pass
        ok, detail = False, f"cannot read the chain at {rpc_url}: {exc.diagnostics()}"
    except (KeyError, TypeError, ValueError):
        ok, detail = False, "the signed statement has no job id or metered record count"
    report.add("settlement", ok, detail)


def _is_timestamp(document: Any) -> bool:
    anchor = document.get("anchor") if isinstance(document, dict) else None
    return isinstance(anchor, dict) and anchor.get("method") == "rfc3161-batch"


def verify_receipt_file(path: str | Path, edge_key: str | Path | PublicKey | None = None,
                        rpc_url: str | None = None, offline: bool = False,
                        weights_path: str | Path | None = None, metrics_path: str | Path | None = None,
                        observe: Observer | None = None, min_confirmations: int = 1,
                        require_tee: bool = False, tsa_trust: bytes | None = None,
                        skip_outputs: frozenset[str] = frozenset()) -> VerificationReport:
    """Verify ``path``; weights.safetensors, metrics.json and edge.pub beside it are used too.
    One of those outputs missing is a skipped check that fails the receipt unless it is
    named in ``skip_outputs``."""
    receipt_path = Path(path)
    notes: list[str] = []
    try:
        document = bounded.loads(_read(receipt_path, MAX_RECEIPT_BYTES), what=receipt_path.name)
        key = _edge_key(receipt_path, edge_key, notes)
        weights = _beside(receipt_path, weights_path, WEIGHTS_FILE, notes)
        metrics_bytes = _beside(receipt_path, metrics_path, METRICS_FILE, notes)
        metrics = bounded.loads(metrics_bytes, what=METRICS_FILE, max_bytes=MAX_METRICS_BYTES) \
            if metrics_bytes is not None else None
    except (OSError, ValueError, RaphaError) as exc:
        return _unreadable(receipt_path, exc, offline)
    report = verify_document(document, key, weights=weights, metrics=metrics,
                             rpc_url=rpc_url, offline=offline, observe=observe,
                             min_confirmations=min_confirmations, require_tee=require_tee, tsa_trust=tsa_trust)
    report.source, report.notes, report.skip_outputs = str(receipt_path), notes, frozenset(skip_outputs)
    if report.statement is not None:
        _skip_missing_outputs(report, receipt_path, {"weights": weights, "metrics": metrics_bytes})
    return report


def _skip_missing_outputs(report: VerificationReport, receipt: Path, given: dict[str, bytes | None]) -> None:
    """A SKIP line for each output that was not there to check, where its check would be."""
    at = next((i for i, c in enumerate(report.checks) if c.name == "statement"), -1) + 1
    for name, file_name in OUTPUT_CHECKS.items():
        if given[name] is None:
            detail = (f"not checked: no {file_name} beside the receipt" +
                      ("" if name in report.skip_outputs else f" (put it there, or pass --skip-{name})"))
            report.checks.insert(at, Check(name, "skipped", detail))
        at += 1


def _edge_key(receipt: Path, given: str | Path | PublicKey | None, notes: list[str]) -> PublicKey | None:
    if isinstance(given, PublicKey):
        return given
    if given:
        return read_edge_key(given)
    beside = receipt.parent / EDGE_KEY_FILE
    if beside.is_file():
        notes.append(f"edge key taken from {beside} beside the receipt (pass --edge-key to pin it)")
        return read_edge_key(beside)
    return None


def _beside(receipt: Path, given: str | Path | None, name: str, notes: list[str]) -> bytes | None:
    if given:
        return Path(given).read_bytes()
    candidate = receipt.parent / name
    if candidate.is_file():
        notes.append(f"checking {candidate} beside the receipt")
        return candidate.read_bytes()
    return None


def _read(path: Path, max_bytes: int) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RaphaError(f"{path.name} is larger than {max_bytes} bytes: not a receipt")
    return data


def _unreadable(path: Path, exc: Exception, offline: bool) -> VerificationReport:
    report = VerificationReport(source=str(path), offline=offline)
    detail = exc.diagnostics() if isinstance(exc, RaphaError) else (
        f"cannot read {path}: {exc.strerror}" if isinstance(exc, OSError) else f"{path.name} is not valid JSON")
    report.add("format", False, detail)
    return report


def _observe(document: Any, rpc_url: str | None, observe: Observer | None,
             offline: bool = False) -> tuple[AnchorObservation | None, str]:
    anchor = document.get("anchor") if isinstance(document, dict) else None
    if offline or not rpc_url or not isinstance(anchor, dict) or not isinstance(anchor.get("tx_hash"), str):
        return None, ""
    if observe is None:
        from .chain import observe_anchor

        observe = observe_anchor
    try:
        return observe(rpc_url, anchor["tx_hash"]), ""
    except RaphaError as exc:  # an unreachable chain is a failed check, never a pass
        return None, exc.diagnostics()


def _settle_anchor(report: VerificationReport, rpc_url: str | None, offline: bool, chain_error: str,
                   timestamp: bool = False) -> None:
    """Say why an anchor check was skipped, and fail the skips that only look harmless."""
    for index, check in enumerate(report.checks):
        if check.name != "anchor" or check.status != "skipped":
            continue
        if "not anchored" in check.detail:
            status = "skipped" if offline else "fail"
            report.checks[index] = Check("anchor", status, check.detail)
        elif chain_error:
            report.checks[index] = Check("anchor", "fail", f"cannot read the chain at {rpc_url}: {chain_error}")
        elif not offline:
            report.checks[index] = Check("anchor", "skipped", NO_TSA if timestamp else NO_RPC)
        else:
            report.checks[index] = Check("anchor", "skipped", "offline: chain not consulted")


def format_report(report: VerificationReport) -> list[str]:
    """One line per check, ``PASS signature  signed by edge key …``."""
    lines = [f"note: {note}" for note in report.notes]
    width = max((len(c.name) for c in report.checks), default=0)
    for check in report.checks:
        mark = {"pass": "PASS", "fail": "FAIL", "pending": "WAIT", "warn": "WARN"}.get(check.status, "SKIP")
        lines.append(f"{mark} {check.name.ljust(width)}  {check.detail}")
    return lines + input_lines(report)


def job_inputs(report: Verification) -> dict[str, Any]:
    """What the signed receipt says came in beside the cell: the code listing's digest
    (with included files) and each artifact by name, sha256 and size. Empty unless the
    signature verified (``statement`` is set only then)."""
    statement = getattr(report, "statement", None)
    job = (statement or {}).get("predicate", {}).get("job", {}) if isinstance(statement, dict) else {}
    found: dict[str, Any] = {}
    if isinstance(job, dict) and isinstance(job.get("code"), dict):
        found["code"] = job["code"]
    if isinstance(job, dict) and isinstance(job.get("artifacts"), list):
        found["artifacts"] = job["artifacts"]
    if isinstance(job, dict) and "processes" in job:  # the signature check read it as a whole number
        found["processes"] = job["processes"]
    return found


def input_lines(report: Verification) -> list[str]:
    inputs = job_inputs(report)
    lines = []
    code = inputs.get("code")
    if code:
        files = [f.get("path") for f in code.get("files", []) if isinstance(f, dict)]
        lines.append(f"code     sha256 {code.get('sha256')} over {len(files)} files: {', '.join(map(str, files))}")
    for artifact in inputs.get("artifacts", []):
        if isinstance(artifact, dict):
            lines.append(f"artifact {artifact.get('name')}: sha256 {artifact.get('sha256')}, "
                         f"{artifact.get('bytes')} bytes")
    if "processes" in inputs:
        lines.append(f"processes {inputs['processes']}: ranks of one torch.distributed group under one sandbox, "
                     "TCP on its own loopback only")
    return lines


def report_dict(report: VerificationReport) -> dict[str, Any]:
    return {"receipt": report.source, "ok": report.passed, "outcome": report.outcome,
            "offline": report.offline, "notes": report.notes,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in report.checks],
            **job_inputs(report)}
