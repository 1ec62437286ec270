"""Who may release a held job, and how many must agree (S5: output checkers).

Pure: the job under review (its dataset's release mode, its researcher), the output
checkers the hospital registered and the decisions taken so far go in; an outcome comes
out, or ``ReviewRefused`` for a decision that must not be taken. No I/O, so the same rule
decides at the moment of a decision, after a restart and in the tests.

The rules, each against a way of getting outputs out unreviewed:
- ``review`` (and a job that ``auto`` holds because the policy asked for review) needs one
  approval; ``two_person`` needs two from different checkers. An unknown mode refuses (S4).
- The researcher who ran the job never counts, not under another registration of the same
  name either (a re-registered key is still the same person to the hospital).
- Only keys registered with the ``output-checker`` role count, checked at every count: an
  approval by a checker since removed no longer counts, and the job stays held.
- One checker counts once: a second decision by the same checker is refused, whatever it says.
- Any reject refuses the release, however many approvals there are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_rapha.protocol.review import ReviewDecision, ReviewRefused

APPROVALS_NEEDED = {"auto": 1, "review": 1, "two_person": 2}
HELD, RELEASE, REFUSE = "held", "release", "refuse"


@dataclass(frozen=True)
class Checker:
    name: str
    key_id: str


@dataclass(frozen=True)
class JobUnderReview:
    job_id: str
    release_mode: str
    researcher_key_id: str
    researcher_name: str | None = None  # as registered now; None once unregistered


@dataclass(frozen=True)
class ReviewOutcome:
    status: str  # HELD, RELEASE or REFUSE
    needed: int
    approved_by: tuple[Checker, ...]
    rejected_by: tuple[Checker, ...]
    reasons: tuple[str, ...]  # the rejects' reasons, for the researcher

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "approvals_needed": self.needed,
                "approved_by": [c.key_id for c in self.approved_by],
                "rejected_by": [c.key_id for c in self.rejected_by], "reasons": list(self.reasons)}


def approvals_needed(release_mode: str) -> int:
    needed = APPROVALS_NEEDED.get(release_mode)
    if needed is None:
        raise ReviewRefused(f"unknown release mode {release_mode!r}: the job cannot be released",
                            hint=f"the dataset's release mode must be one of {', '.join(APPROVALS_NEEDED)}")
    return needed


def checker_index(checkers: Sequence[Checker]) -> dict[str, Checker]:
    return {checker.key_id: checker for checker in checkers}


def admit(decision: ReviewDecision, job: JobUnderReview, checkers: Sequence[Checker],
          decisions: Sequence[ReviewDecision]) -> Checker:
    """The registered checker who took ``decision``, if it may be taken; else ``ReviewRefused``."""
    approvals_needed(job.release_mode)
    if decision.job_id != job.job_id:
        raise ReviewRefused(f"the decision is about job {decision.job_id}, not {job.job_id}")
    checker = checker_index(checkers).get(decision.checker_key_id)
    if checker is None:
        raise ReviewRefused(f"key {decision.checker_key_id} is not registered as an output checker",
                            hint="register it with 'rapha-edge researchers add NAME KEY --role output-checker'")
    if _is_researcher(checker, job):
        raise ReviewRefused(f"{checker.name} ran job {job.job_id}: the job's own researcher cannot decide its release",
                            hint="another output checker must review it")
    for earlier in decisions:
        if earlier.checker_key_id == checker.key_id:
            raise ReviewRefused(f"{checker.name} already decided on job {job.job_id} ({earlier.decision}); "
                                "one checker counts once", hint="a different output checker must decide")
    return checker


def review_outcome(job: JobUnderReview, checkers: Sequence[Checker],
                   decisions: Sequence[ReviewDecision]) -> ReviewOutcome:
    """Release once enough distinct checkers approved; refuse on any reject; else held."""
    needed = approvals_needed(job.release_mode)
    approved, rejected, reasons = [], [], []
    for decision, checker in _counted(job, checkers, decisions):
        if decision.approves:
            approved.append(checker)
        else:
            rejected.append(checker)
            reasons.append(decision.reason)
    if rejected:
        status = REFUSE
    else:
        status = RELEASE if len(approved) >= needed else HELD
    return ReviewOutcome(status, needed, tuple(approved), tuple(rejected), tuple(reasons))


def _counted(job: JobUnderReview, checkers: Sequence[Checker],
             decisions: Sequence[ReviewDecision]) -> list[tuple[ReviewDecision, Checker]]:
    """Each registered checker's first decision on this job, the job's researcher left out."""
    index = checker_index(checkers)
    counted, seen = [], set()
    for decision in decisions:
        checker = index.get(decision.checker_key_id)
        if (checker is None or decision.job_id != job.job_id or checker.key_id in seen
                or _is_researcher(checker, job)):
            continue
        seen.add(checker.key_id)
        counted.append((decision, checker))
    return counted


def _is_researcher(checker: Checker, job: JobUnderReview) -> bool:
    return checker.key_id == job.researcher_key_id or (job.researcher_name is not None
                                                       and checker.name == job.researcher_name)
