"""The output checkers' desk: what ``rapha-edge release`` asks of a running edge.

``list`` and ``show`` give a hospital's output checker what a held job's release is decided
on: the disclosure checks and their figures, the policy's answer, the decisions so far and
a summary of the outputs (tensor and parameter counts, bytes, dtypes, metric series
lengths under their declared names), never record data, tensor names or values. ``decide`` takes one checker's signed
statement: verified against the key registered for the name given, bound to this edge,
this job and the exact outputs held (``protocol/review.py``), and handed to the held-job
walk, which audits it before it counts (S7) and releases or refuses when the rule says so
(``release/review.py``). A decision refused here (unknown job or name, not a checker, not
the checker's key, stale, replayed, counted already, a job no longer held) changes
nothing: the job keeps its state and the audit log gains only a ``release.review_refused``
row that names what was refused.

Reached only through the admin socket (``edge_kernel/admin.py``), never a researcher route.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.errors import AuthError, BadInput, BadSignature, NotFound, RaphaError
from jupyter_rapha.protocol.keys import PublicKey
from jupyter_rapha.protocol.review import DecisionSubject, ReviewDecision, ReviewRefused, verify_decision

from ..audit import AuditLog
from ..researchers import ResearcherRegistry
from ..store import JOB_ID_LENGTH, JobRecord, JobStore

_JOB_REF = re.compile(r"^[0-9a-f]{8,32}$")


class HeldJobsView(Protocol):
    """What the held-job walk (``JobManager``) offers the desk."""

    def held_jobs(self) -> list[JobRecord]: ...

    def held_detail(self, job_id: str) -> dict[str, Any]: ...

    def decide_held(self, job_id: str, review: Any) -> JobRecord: ...


def outputs_digest(weights_sha256: str, metrics_sha256: str) -> str:
    """What a checker's statement names as the outputs decided on: both held files."""
    return hashlib.sha256(canonical_json({"metrics_sha256": metrics_sha256,
                                          "weights_sha256": weights_sha256})).hexdigest()


class ReleaseDesk:
    def __init__(self, *, held: HeldJobsView, store: JobStore, researchers: ResearcherRegistry, audit: AuditLog,
                 edge_key: PublicKey, held_outputs: Callable[[str], tuple[str, str]],
                 clock: Callable[[], float] = time.time) -> None:
        """``held_outputs(job_id)``: the SHA-256 of the held weights and metrics files."""
        self.held, self.store, self.researchers, self.audit = held, store, researchers, audit
        self.edge_key, self.held_outputs, self.clock = edge_key, held_outputs, clock
        self._lock = threading.Lock()  # one decision at a time: two checkers never race a count

    # ---- what a checker reads ---------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        return [self._line(job) for job in self.held.held_jobs()]

    def show(self, job_ref: str) -> dict[str, Any]:
        """A held job's detail; for a job no longer held (a whole id), its state, reasons
        and the decisions taken on it, from the audit log."""
        job = self.store.get(self._job_id(job_ref))
        if job.state != "held":
            return self._history(job)
        job_id = job.job_id
        detail = self.held.held_detail(job_id)
        return {**self._line(self.store.get(job_id)), "checks": detail.get("checks"),
                "policy": detail.get("decision"), "decisions": [_kept(r) for r in detail.get("reviews") or []],
                "outputs": outputs_summary(detail.get("outputs") or {}),
                "subject": self._subject(job_id).__dict__}

    def _line(self, job: JobRecord) -> dict[str, Any]:
        progress = job.progress
        return {"job_id": job.job_id, "dataset": job.dataset, "researcher": self._name(job.researcher_key_id),
                "researcher_key_id": job.researcher_key_id, "submitted": job.submitted, "state": job.state,
                **{k: progress[k] for k in ("checks_done", "checks_total", "review_needed", "approvals",
                                             "approvals_needed") if k in progress}}

    def _history(self, job: JobRecord) -> dict[str, Any]:
        entries = self.audit.entries(job.job_id)
        return {**self._line(job), "reasons": job.reasons,
                "decisions": [_kept(e["detail"]) for e in entries if e["event"] == "release.review"],
                "refused_attempts": sum(e["event"] == "release.review_refused" for e in entries)}

    def _name(self, key_id: str) -> str | None:
        try:
            return self.researchers.by_key_id(key_id).name
        except AuthError:
            return None  # unregistered since

    # ---- what a checker does ----------------------------------------------------------
    def decide(self, job_ref: str, checker_name: str, envelope: Any) -> dict[str, Any]:
        with self._lock:
            job_id: str | None = None
            try:
                job_id = self._job_id(job_ref)
                self._require_held(job_id)
                review = self._verified(job_id, checker_name, envelope)
                self.held.decide_held(job_id, review)
            except (BadInput, AuthError, NotFound, ReviewRefused) as refused:
                self._refused(job_id, checker_name, refused)
                raise
            job = self.store.get(job_id)  # as the decision left it (a release that broke fails the job)
        return {"job_id": job.job_id, "state": job.state, "reasons": job.reasons, "decision": review.decision,
                "checker": checker_name, **{k: job.progress[k] for k in ("approvals", "approvals_needed")
                                            if k in job.progress}}

    def _verified(self, job_id: str, checker_name: str, envelope: Any) -> ReviewDecision:
        checker = self.researchers.by_name(checker_name)
        if not checker.is_output_checker:
            raise ReviewRefused(f"{checker.name} is registered without the output-checker role",
                                hint="register them with 'rapha-edge researchers add NAME KEY --role output-checker "
                                     "--replace'")
        try:
            return verify_decision(envelope, checker.key, self._subject(job_id), int(self.clock()))
        except BadSignature as exc:
            raise BadSignature(f"the decision is not signed by the key registered for {checker.name} "
                               f"(key {checker.key_id})", hint="sign with that checker's own key (--key)") from exc

    def _subject(self, job_id: str) -> DecisionSubject:
        return DecisionSubject(self.edge_key.key_id, job_id, outputs_digest(*self.held_outputs(job_id)))

    def _require_held(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job.state != "held":
            raise ReviewRefused(f"job {job.job_id} is {job.state}, not held: its release was already decided"
                                if job.state in ("completed", "refused") else
                                f"job {job.job_id} is {job.state}, not held: there is nothing to decide")

    def _job_id(self, job_ref: str) -> str:
        """A held job by its id or 8+ of its first characters; any other job by its whole id."""
        if not isinstance(job_ref, str) or not _JOB_REF.match(job_ref):
            raise BadInput(f"{str(job_ref)[:40]!r} is not a job id: give the id or 8 or more of its first "
                           "characters (0-9, a-f)")
        matches = [job.job_id for job in self.held.held_jobs() if job.job_id.startswith(job_ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise BadInput(f"{len(matches)} held jobs start with {job_ref}; give more characters of the id")
        if len(job_ref) < JOB_ID_LENGTH:
            raise NotFound(f"no held job starts with {job_ref}",
                           hint="see 'rapha-edge release list'; a job no longer held takes its whole id")
        self.store.get(job_ref)  # NotFound for a job this edge never had
        return job_ref

    def _refused(self, job_id: str | None, checker_name: str, refused: RaphaError) -> None:
        """One row per refused decision: who tried what, and why it was refused."""
        self.audit.append("release.review_refused", job_id=job_id,
                          detail={"checker": str(checker_name)[:64], "kind": type(refused).__name__,
                                  "message": refused.message[:300]})


def _kept(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("checker", "checker_key_id", "decision", "reason", "signed_at",
                                      "statement_sha256")}


def outputs_summary(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Counts only: tensors, parameters, bytes, dtypes, and each metric's series length
    under the name the spec declared before the job ran. Tensor names and all values are
    left out: the job chose them after it read records, so they could spell record data to
    whoever reads them."""
    tensors = [t for t in outputs.get("tensors") or [] if isinstance(t, Mapping)]
    metrics = outputs.get("metrics") or {}
    return {"tensors": len(tensors), "parameters": sum(math.prod(t.get("shape") or []) for t in tensors),
            "weights_bytes": outputs.get("weights_bytes"),
            "dtypes": dict(sorted(Counter(str(t.get("dtype")) for t in tensors).items())),
            "metrics": {str(name): int(m.get("count", 0)) for name, m in sorted(metrics.items())
                        if isinstance(m, Mapping)}}
