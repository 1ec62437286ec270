"""The data stewards' desk: what ``rapha-edge approval`` asks of a running edge.

A job whose dataset (or purpose) asks for approval before it runs (``run_approval`` in the
policy data) waits in ``awaiting_approval`` once its gates passed. What the steward decides
on is kept beside the job, in ``state/jobs/ID/approval/``: ``request.json`` (the cell and
its included files' digests, the scan findings, the policy's decision, the budget and the
most the job may cost, written before the job waits) and ``approvals.json`` (each
steward's admitted decision with its signed statement, audited before it counts: S7).

``list`` and ``show`` give the steward the waiting jobs and that detail; ``decide`` takes
one steward's signed statement (``protocol/approval.py``): verified against the key
registered for the name given, bound to this edge, this job and the job's request digest,
then handed to the job walk (``JobManager.decide_waiting``), which admits it by the rules
of ``run_approval.py`` and lets the job run, rejects it or keeps it waiting. A decision
refused here (unknown job or name, not a steward, not the steward's key, stale, replayed,
counted already, the job's own researcher, a job not waiting) changes nothing but one
``approval.refused`` row in the audit log.

Reached only through the admin socket (``edge_kernel/admin.py``), never a researcher route.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from jupyter_rapha.protocol.approval import ApprovalRefused, ApprovalSubject, RunApproval, verify_approval
from jupyter_rapha.protocol.errors import AuthError, BadInput, BadSignature, NotFound, RaphaError, StorageFault
from jupyter_rapha.protocol.keys import PublicKey

from .audit import AuditLog
from .release.files import write_atomically
from .researchers import ResearcherRegistry
from .store import JOB_ID_LENGTH, JobRecord, JobStore

AWAITING = "awaiting_approval"
APPROVAL_DIR = "approval"
REQUEST_FILE = "request.json"
APPROVALS_FILE = "approvals.json"
_JOB_REF = re.compile(r"^[0-9a-f]{8,32}$")


def approval_dir(jobs_dir: Path, job_id: str) -> Path:
    return jobs_dir / job_id / APPROVAL_DIR


def read_kept(target: Path, name: str) -> Any | None:
    path = target / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:
        raise StorageFault(f"a job's {APPROVAL_DIR}/{name} is damaged") from exc


def write_kept(target: Path, name: str, value: Any) -> None:
    if name not in (REQUEST_FILE, APPROVALS_FILE):
        raise StorageFault(f"no approval file {name}")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(target / name, json.dumps(value, indent=2, allow_nan=False).encode())


def receipt_section(mode: str, kept: list[dict[str, Any]]) -> dict[str, Any]:
    """The receipt's ``approval`` section: who let the job run, by their signed statements."""
    return {"mode": mode, "approvals": [{k: entry.get(k) for k in (
        "steward_key_id", "decision", "reason_sha256", "signed_at", "statement_sha256")} for entry in kept]}


class WaitingJobs(Protocol):
    """What the job walk (``JobManager``) offers the desk."""

    def decide_waiting(self, job_id: str, approval: RunApproval) -> JobRecord: ...


class ApprovalDesk:
    def __init__(self, *, jobs: WaitingJobs, store: JobStore, researchers: ResearcherRegistry, audit: AuditLog,
                 edge_key: PublicKey, jobs_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.jobs, self.store, self.researchers, self.audit = jobs, store, researchers, audit
        self.edge_key, self.jobs_dir, self.clock = edge_key, jobs_dir, clock
        self._lock = threading.Lock()

    # ---- what a steward reads ---------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        return [self._line(job) for job in self.store.in_state(AWAITING)]

    def show(self, job_ref: str) -> dict[str, Any]:
        """A waiting job's cell, scan findings, policy result, budget, cost and decisions so
        far; for a job no longer waiting (a whole id), its state, reasons and decisions."""
        job = self.store.get(self._job_id(job_ref))
        target = approval_dir(self.jobs_dir, job.job_id)
        request = read_kept(target, REQUEST_FILE)
        kept = read_kept(target, APPROVALS_FILE) or []
        detail = {**self._line(job), "decisions": [_shown(entry) for entry in kept], "reasons": job.reasons}
        if job.state == AWAITING and request is not None:
            detail.update(request=request,
                          subject=ApprovalSubject(self.edge_key.key_id, job.job_id, job.request_sha256).__dict__)
        return detail

    def _line(self, job: JobRecord) -> dict[str, Any]:
        return {"job_id": job.job_id, "dataset": job.dataset, "researcher": self._name(job.researcher_key_id),
                "researcher_key_id": job.researcher_key_id, "submitted": job.submitted, "state": job.state,
                **{k: job.progress[k] for k in ("approvals", "approvals_needed") if k in job.progress}}

    def _name(self, key_id: str) -> str | None:
        try:
            return self.researchers.by_key_id(key_id).name
        except AuthError:
            return None

    # ---- what a steward does ----------------------------------------------------------
    def decide(self, job_ref: str, steward_name: str, envelope: Any) -> dict[str, Any]:
        with self._lock:
            job_id: str | None = None
            try:
                job_id = self._job_id(job_ref)
                job = self.store.get(job_id)
                if job.state != AWAITING:
                    raise ApprovalRefused(f"job {job_id} is {job.state}, not awaiting approval: there is nothing "
                                          "to decide")
                approval = self._verified(job, steward_name, envelope)
                job = self.jobs.decide_waiting(job_id, approval)
            except (BadInput, AuthError, NotFound, ApprovalRefused) as refused:
                self._refused(job_id, steward_name, refused)
                raise
        return {"job_id": job.job_id, "state": job.state, "reasons": job.reasons, "decision": approval.decision,
                "steward": steward_name, **{k: job.progress[k] for k in ("approvals", "approvals_needed")
                                            if k in job.progress}}

    def _verified(self, job: JobRecord, steward_name: str, envelope: Any) -> RunApproval:
        steward = self.researchers.by_name(steward_name)
        if not steward.is_data_steward:
            raise ApprovalRefused(f"{steward.name} is registered without the data-steward role",
                                  hint="register them with 'rapha-edge researchers add NAME KEY --role data-steward "
                                       "--replace'")
        subject = ApprovalSubject(self.edge_key.key_id, job.job_id, job.request_sha256)
        try:
            return verify_approval(envelope, steward.key, subject, int(self.clock()))
        except BadSignature as exc:
            raise BadSignature(f"the approval is not signed by the key registered for {steward.name} "
                               f"(key {steward.key_id})", hint="sign with that steward's own key (--key)") from exc

    def _job_id(self, job_ref: str) -> str:
        """A waiting job by its id or 8+ of its first characters; any other job by its whole id."""
        if not isinstance(job_ref, str) or not _JOB_REF.match(job_ref):
            raise BadInput(f"{str(job_ref)[:40]!r} is not a job id: give the id or 8 or more of its first "
                           "characters (0-9, a-f)")
        matches = [job.job_id for job in self.store.in_state(AWAITING) if job.job_id.startswith(job_ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise BadInput(f"{len(matches)} waiting jobs start with {job_ref}; give more characters of the id")
        if len(job_ref) < JOB_ID_LENGTH:
            raise NotFound(f"no job awaiting approval starts with {job_ref}",
                           hint="see 'rapha-edge approval list'; a job no longer waiting takes its whole id")
        self.store.get(job_ref)  # NotFound for a job this edge never had
        return job_ref

    def _refused(self, job_id: str | None, steward_name: str, refused: RaphaError) -> None:
        self.audit.append("approval.refused", job_id=job_id,
                          detail={"steward": str(steward_name)[:64], "kind": type(refused).__name__,
                                  "message": refused.message[:300]})


def _shown(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("steward", "steward_key_id", "decision", "reason", "signed_at",
                                      "statement_sha256")}
