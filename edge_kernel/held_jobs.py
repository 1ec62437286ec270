"""Held jobs: a finished job's outputs wait edge-side until their release is decided (S5).

    running -> held -> (disclosure checks) -> release policy -> completed | refused
                                                  |
                                                  +-> review: output checkers decide

Each step is written before the next is taken: ``held/`` (outputs, unsigned predicate),
the audit entry ``job.hold`` and the ``held`` state; ``checks.json`` with the checks'
figures; ``decision.json`` with the policy's answer; ``reviews.json`` with each checker's
decision, audited before it counts. An edge that restarts finds each held job where it
stopped: checks that had not finished run again, a job waiting for review keeps waiting.

While a job is held the researcher sees its state and counters only: how many checks ran,
whether it waits for review and how many approvals it has, and the checks' figures
rounded to two decimals (every number that leaves is a channel; the exact figures are in
the receipt of a released job). A refusal removes the held outputs: nothing of them ever
leaves.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Callable

from jupyter_rapha.protocol.errors import BadInput, GateDenied, NotFound

from .audit import AuditLog
from .release.disclosure import (CHECK_NAMES, HELD_PROGRESS, check_progress, disclosure_section,
                                 held_summary, review_progress)
from .release.checks import ChecksInterrupted
from .release.held import (CHECKS_FILE, DECISION_FILE, REVIEWS_FILE, Held, held_dir, read_held, read_part,
                           remove_held, write_held, write_part)
from .store import JobRecord, JobStore

log = logging.getLogger(__name__)

OUTPUTS_LOST = "release: the held outputs could not be read at the edge, so nothing was released"


class CheckRunner(Protocol):
    """Runs the disclosure checks on a held job (``release.check_runner.CheckProcess``):
    returns ``{"checks": {name: figures}, "holdback_size": N}``; ``on_check`` hears each
    check's figures as it finishes. Any failure raises ``ReleaseDenied``."""

    def run(self, job: JobRecord, held: Held, on_check: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]: ...

    def stop(self) -> None: ...


class ReleasePolicy(Protocol):
    """The release decision over the checks' figures (``release.policy.ReleasePolicy``):
    ``{"decision": "release"|"review"|"refuse", "rule", "reasons", "mode", "approvals_needed"}``."""

    def decide(self, dataset: str, checks: dict[str, Any]) -> dict[str, Any]: ...


class ReviewRule(Protocol):
    """How many approvals release a job and who may give them (``release.review``)."""

    def outcome(self, job: JobRecord, decision: dict[str, Any], reviews: list[dict[str, Any]]) -> str: ...

    def admit(self, job: JobRecord, reviews: list[dict[str, Any]], review: Any) -> dict[str, Any]: ...


Release = Callable[[str, Held, dict[str, Any]], None]


class HeldJobs:
    def __init__(self, *, jobs_dir: Path, store: JobStore, audit: AuditLog, checks: CheckRunner,
                 policy: ReleasePolicy, reviews: ReviewRule | None, release: Release) -> None:
        self.jobs_dir, self.store, self.audit = jobs_dir, store, audit
        self.checks, self.policy, self.reviews, self._release = checks, policy, reviews, release
        self._deciding = threading.Lock()  # one decision at a time: a checker's and the worker's never race

    def dir(self, job_id: str) -> Path:
        return held_dir(self.jobs_dir, job_id)

    # ---- the walk -----------------------------------------------------------------
    def hold(self, job_id: str, held: Held, gates: list[dict[str, Any]], progress: dict[str, Any]) -> None:
        write_held(self.dir(job_id), held)
        self.audit.append("job.hold", job_id=job_id,
                          detail={"weights_sha256": held.predicate["outputs"]["weights"]["sha256"],
                                  "metrics_sha256": held.predicate["outputs"]["metrics"]["sha256"]})
        self.store.transition(job_id, "held", gates=gates, progress={**progress, **check_progress({})})

    def check_and_decide(self, job_id: str) -> None:
        """Run the checks that have no result yet, then the policy, then act on it."""
        held = read_held(self.dir(job_id))
        if held is None:
            self._refuse(job_id, [OUTPUTS_LOST], {"rule": "held_outputs_missing"})
            return
        checks = read_part(self.dir(job_id), CHECKS_FILE)
        if checks is None:
            try:
                checks = self._run_checks(job_id, held)
            except ChecksInterrupted:  # the edge stops: held, unanswered, checked again at the next start
                log.warning("job %s: the edge stopped during its checks; they run again at the next start", job_id)
                return
            except GateDenied as denied:  # S4: a check that crashed, hung or answered nonsense refuses
                problem = getattr(denied, "problem", denied.message)
                log.error("job %s: disclosure checks failed: %s", job_id, problem)
                self.audit.append("release.checks_failed", job_id=job_id, detail={"problem": problem})
                self._refuse(job_id, denied.reasons, {"rule": "check_failed"})
                return
        decision = read_part(self.dir(job_id), DECISION_FILE)
        if decision is None:
            decision = self.policy.decide(self.store.get(job_id).dataset, checks)
            self.audit.append("release.decide", job_id=job_id, detail=decision)
            write_part(self.dir(job_id), DECISION_FILE, decision)
        self._act(job_id, held, checks, decision)

    def _run_checks(self, job_id: str, held: Held) -> dict[str, Any]:
        job = self.store.get(job_id)
        figures: dict[str, dict[str, Any]] = {}

        def on_check(name: str, result: dict[str, Any]) -> None:
            figures[name] = result
            self.store.set_progress(job_id, {**self.store.get(job_id).progress, **check_progress(figures)})

        self.audit.append("release.checks_start", job_id=job_id, detail={"checks": list(CHECK_NAMES)})
        checks = self.checks.run(job, held, on_check)
        self.audit.append("release.checks", job_id=job_id, detail=checks)
        write_part(self.dir(job_id), CHECKS_FILE, checks)
        self.store.set_progress(job_id, {**job.progress, **check_progress(checks["checks"])})
        return checks

    def _act(self, job_id: str, held: Held, checks: dict[str, Any], decision: dict[str, Any]) -> None:
        outcome = decision.get("decision")
        reviews = read_part(self.dir(job_id), REVIEWS_FILE) or []
        if outcome == "review":
            outcome = self._review_outcome(job_id, decision, reviews)
        if outcome == "release":
            self._release(job_id, held, disclosure_section(checks, decision, reviews, "release"))
        elif outcome == "pending":
            self.store.set_progress(job_id, {**self.store.get(job_id).progress,
                                             **review_progress(decision, reviews)})
        else:  # "refuse", or anything the policy should never answer: fail closed (S4)
            self._refuse(job_id, _refusal_reasons(decision, reviews), decision)

    def _review_outcome(self, job_id: str, decision: dict[str, Any], reviews: list[dict[str, Any]]) -> str:
        if self.reviews is None:  # no output checkers on this edge: a job needing review waits
            return "pending"
        return self.reviews.outcome(self.store.get(job_id), decision, reviews)

    def _refuse(self, job_id: str, reasons: list[str], decision: dict[str, Any]) -> None:
        self.audit.append("release.refuse", job_id=job_id,
                          detail={"rule": decision.get("rule"), "reasons": reasons})
        remove_held(self.dir(job_id))  # first: a refused job's outputs never outlive the refusal
        progress = {k: v for k, v in self.store.get(job_id).progress.items() if k not in HELD_PROGRESS}
        self.store.transition(job_id, "refused", reasons=reasons, progress=progress)

    def stop(self) -> None:
        self.checks.stop()

    # ---- after a restart ------------------------------------------------------------
    def resume(self) -> list[str]:
        """The held jobs to take up again (their checks, or their decision), oldest first."""
        return [job.job_id for job in self.store.in_state("held")]

    # ---- what output checkers see and do -----------------------------------------
    def held_jobs(self) -> list[JobRecord]:
        return self.store.in_state("held")

    def held_detail(self, job_id: str) -> dict[str, Any]:
        """For the hospital's output checker (edge-side only): the checks and their exact
        figures, the decision, the reviews so far and a summary of the outputs (tensor
        names, dtypes and shapes, metric series); never record data."""
        job = self._held_job(job_id)
        held = read_held(self.dir(job_id))
        if held is None:
            raise NotFound(f"job {job_id} has no held outputs")
        return {"job_id": job_id, "researcher_key_id": job.researcher_key_id, "dataset": job.dataset,
                "submitted": job.submitted, "checks": read_part(self.dir(job_id), CHECKS_FILE),
                "decision": read_part(self.dir(job_id), DECISION_FILE),
                "reviews": read_part(self.dir(job_id), REVIEWS_FILE) or [], "outputs": held_summary(held)}

    def decide_held(self, job_id: str, review: Any) -> JobRecord:
        """Record one output checker's decision, audited before it takes effect (S7), and
        release or refuse once the review rule says so. Nothing changes on bad input."""
        if self.reviews is None:
            raise BadInput("this edge has no output checkers configured")
        with self._deciding:
            job = self._held_job(job_id)
            decision = read_part(self.dir(job_id), DECISION_FILE)
            if decision is None:
                raise BadInput(f"job {job_id} is still being checked; decide once its checks are done")
            if decision.get("decision") != "review":
                raise BadInput(f"job {job_id} is not waiting for an output checker")
            reviews = read_part(self.dir(job_id), REVIEWS_FILE) or []
            entry = self.reviews.admit(job, reviews, review)  # raises on a second vote, the owner, ...
            self.audit.append("release.review", job_id=job_id, actor=entry.get("checker_key_id"), detail=entry)
            write_part(self.dir(job_id), REVIEWS_FILE, [*reviews, entry])
            held = read_held(self.dir(job_id))
            checks = read_part(self.dir(job_id), CHECKS_FILE)
            if held is None or checks is None:
                self._refuse(job_id, [OUTPUTS_LOST], {"rule": "held_outputs_missing"})
            else:
                self._act(job_id, held, checks, decision)
        return self.store.get(job_id)

    def _held_job(self, job_id: str) -> JobRecord:
        job = self.store.get(job_id)
        if job.state != "held":
            raise BadInput(f"job {job_id} is not held (state: {job.state}); only a held job can be decided")
        return job


def _refusal_reasons(decision: dict[str, Any], reviews: list[dict[str, Any]]) -> list[str]:
    rejected = [r for r in reviews if r.get("decision") == "reject"]
    if rejected:
        return [f"release: an output checker refused the release: {r.get('reason', '')}".rstrip(": ")
                for r in rejected]
    reasons = decision.get("reasons")
    if isinstance(reasons, list) and reasons and all(isinstance(r, str) for r in reasons):
        return [r if r.startswith("release: ") else f"release: {r}" for r in reasons]
    return ["release: the release policy refused the outputs"]
