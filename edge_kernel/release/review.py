"""Who may release a held job, and how many must agree (S5: output checkers).

Pure: the dataset's release mode, the job's researcher, the output checkers the hospital
registered and the decisions taken so far go in; an outcome comes out, or
``ReviewRefused`` for a decision that must not be taken. No I/O, so the same rule decides
at the moment of a decision, after a restart and in the tests. ``OutputCheckerRule`` is
the held-job walk's view of it, reading the registry through callables it is given.

The rules, each against a way of getting outputs out unreviewed:
- ``review`` (and a job that ``auto`` holds because the policy asked for review) needs one
  approval; ``two_person`` needs two from different checkers. An unknown mode refuses (S4).
- The researcher who ran the job never counts, also when their own registration holds
  the ``output-checker`` role too (one entry, one key: the key that signed the job).
- Only keys registered with the ``output-checker`` role count, checked at every count: an
  approval by a checker since removed no longer counts, and the job stays held.
- One checker counts once: a second decision by the same checker is refused, whatever it
  says, and the same signed statement again is refused as a replay.
- Any reject refuses the release, however many approvals there are, also one whose
  checker has been removed since. A record of decisions that holds one about another job
  is damaged, and refuses too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_rapha.protocol.errors import Replayed, StorageFault
from jupyter_rapha.protocol.review import DECISIONS, ReviewDecision, ReviewRefused

APPROVALS_NEEDED = {"auto": 1, "review": 1, "two_person": 2}
PENDING, RELEASE, REFUSE = "pending", "release", "refuse"


@dataclass(frozen=True)
class Checker:
    name: str
    key_id: str


@dataclass(frozen=True)
class Vote:
    """One checker's decision as it is kept with the held job (``reviews.json``)."""

    job_id: str
    checker_key_id: str
    decision: str
    reason: str
    statement_sha256: str

    @property
    def approves(self) -> bool:
        return self.decision == "approve"

    @classmethod
    def of(cls, decision: ReviewDecision) -> Vote:
        return cls(decision.job_id, decision.checker_key_id, decision.decision, decision.reason,
                   decision.statement_sha256)

    @classmethod
    def from_entry(cls, entry: Any) -> Vote:
        """A kept entry; one of the wrong shape is damage, never a vote to skip (a skipped
        reject would release)."""
        try:
            vote = cls(*(entry[name] for name in ("job_id", "checker_key_id", "decision", "reason",
                                                  "statement_sha256")))
        except (KeyError, TypeError) as exc:
            raise StorageFault("a held job's output-checker decisions are damaged") from exc
        if vote.decision not in DECISIONS or not all(isinstance(v, str) for v in vote.__dict__.values()):
            raise StorageFault("a held job's output-checker decisions are damaged")
        return vote


@dataclass(frozen=True)
class ReviewOutcome:
    status: str  # PENDING, RELEASE or REFUSE
    needed: int
    approved_by: tuple[Checker, ...]
    rejected_by: tuple[Checker, ...]
    reasons: tuple[str, ...]  # the rejects' reasons, for the researcher

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "approvals_needed": self.needed,
                "approved_by": [c.name for c in self.approved_by],
                "rejected_by": [c.name for c in self.rejected_by], "reasons": list(self.reasons)}


def registered_checkers(researchers: Any) -> list[Checker]:
    """The output checkers a ``ResearcherRegistry`` holds now."""
    return [Checker(r.name, r.key_id) for r in researchers.output_checkers()]


def approvals_needed(release_mode: Any) -> int:
    needed = APPROVALS_NEEDED.get(release_mode) if isinstance(release_mode, str) else None
    if needed is None:
        raise ReviewRefused(f"unknown release mode {release_mode!r}: the job cannot be released",
                            hint=f"the dataset's release mode must be one of {', '.join(APPROVALS_NEEDED)}")
    return needed


def admit(vote: Vote, job_id: str, researcher_key_id: str, checkers: Sequence[Checker],
          earlier: Sequence[Vote]) -> Checker:
    """The registered checker who cast ``vote``, if it may count; else ``ReviewRefused``
    (or ``Replayed`` for a statement already taken)."""
    if vote.job_id != job_id:
        raise ReviewRefused(f"the decision is about job {vote.job_id}, not {job_id}")
    checker = _index(checkers).get(vote.checker_key_id)
    if checker is None:
        raise ReviewRefused(f"key {vote.checker_key_id} is not registered as an output checker",
                            hint="register it with 'rapha-edge researchers add NAME KEY --role output-checker'")
    if checker.key_id == researcher_key_id:
        raise ReviewRefused(f"{checker.name} ran job {job_id}: the job's own researcher cannot decide its release",
                            hint="another output checker must review it")
    for before in earlier:
        if before.statement_sha256 == vote.statement_sha256:
            raise Replayed("this decision statement was already received", hint="sign every decision afresh")
        if before.checker_key_id == checker.key_id:
            raise ReviewRefused(f"{checker.name} already decided on job {job_id} ({before.decision}); "
                                "one checker counts once", hint="a different output checker must decide")
    return checker


def review_outcome(release_mode: Any, job_id: str, researcher_key_id: str, checkers: Sequence[Checker],
                   votes: Sequence[Vote]) -> ReviewOutcome:
    """Release once enough distinct checkers approved; refuse on any reject; else pending.
    ``votes`` are those kept for this job: one about another job is damage (StorageFault)."""
    needed = approvals_needed(release_mode)
    if any(vote.job_id != job_id for vote in votes):
        raise StorageFault(f"job {job_id}'s output-checker decisions hold one about another job (damaged)")
    approved = [checker for vote, checker in _counted(job_id, researcher_key_id, checkers, votes) if vote.approves]
    # Every kept reject refuses, counted or not: it was admitted, and refused at once; it is
    # read again only after a restart, when its checker may have been removed meanwhile.
    rejects = [vote for vote in votes if not vote.approves]
    index = _index(checkers)
    rejected = tuple(index.get(v.checker_key_id, Checker("(no longer registered)", v.checker_key_id)) for v in rejects)
    status = REFUSE if rejects else RELEASE if len(approved) >= needed else PENDING
    return ReviewOutcome(status, needed, tuple(approved), rejected, tuple(v.reason for v in rejects))


def _counted(job_id: str, researcher_key_id: str, checkers: Sequence[Checker],
             votes: Sequence[Vote]) -> list[tuple[Vote, Checker]]:
    """Each registered checker's first vote on this job, the job's researcher left out."""
    index = _index(checkers)
    counted, seen = [], set()
    for vote in votes:
        checker = index.get(vote.checker_key_id)
        if checker is None or checker.key_id in seen or checker.key_id == researcher_key_id:
            continue
        seen.add(checker.key_id)
        counted.append((vote, checker))
    return counted


def _index(checkers: Sequence[Checker]) -> dict[str, Checker]:
    return {checker.key_id: checker for checker in checkers}


class OutputCheckerRule:
    """The review rule of the held-job walk (``HeldJobs``): the rules above over the output
    checkers registered now (``checkers`` reads the registry at each call); a job record
    needs only ``job_id`` and ``researcher_key_id``."""

    def __init__(self, checkers: Callable[[], Sequence[Checker]]) -> None:
        self._checkers = checkers

    def admit(self, job: Any, reviews: Sequence[Mapping[str, Any]], review: ReviewDecision) -> dict[str, Any]:
        """The entry to keep for a verified decision that may count."""
        vote = Vote.of(review)
        checker = admit(vote, job.job_id, job.researcher_key_id, self._checkers(),
                        [Vote.from_entry(r) for r in reviews])
        return {"job_id": vote.job_id, "checker": checker.name, **review.summary(), "envelope": review.envelope}

    def outcome(self, job: Any, decision: Mapping[str, Any], reviews: Sequence[Mapping[str, Any]]) -> str:
        return self.evaluate(job, decision, reviews).status

    def evaluate(self, job: Any, decision: Mapping[str, Any], reviews: Sequence[Mapping[str, Any]]) -> ReviewOutcome:
        """``decision``: the release policy's answer, whose ``mode`` is the dataset's release mode."""
        return review_outcome(decision.get("mode"), job.job_id, job.researcher_key_id, self._checkers(),
                              [Vote.from_entry(r) for r in reviews])
