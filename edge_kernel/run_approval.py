"""Who may let a job run, and how many must agree (a human approval before code runs).

Pure, like ``release/review.py``: the dataset's ``run_approval`` mode, the job's
researcher, the data stewards the hospital registered and the decisions taken so far go
in; an outcome comes out, or ``ApprovalRefused`` for a decision that must not be taken.

The rules, each against a way of getting code run unapproved:
- ``none`` needs no approval (the job runs as before); ``one`` needs one; ``two_person``
  needs two from different stewards. An unknown mode refuses (S4).
- The researcher who submitted the job never counts, also when their own registration
  holds the ``data-steward`` role too.
- Only keys registered with the ``data-steward`` role count, checked at every count: an
  approval by a steward since removed no longer counts, and the job keeps waiting.
- One steward counts once: a second decision by the same steward is refused, whatever it
  says, and the same signed statement again is refused as a replay.
- Any reject ends the job denied, however many approvals there are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_rapha.protocol.approval import DECISIONS, ApprovalRefused, RunApproval
from jupyter_rapha.protocol.errors import Replayed, StorageFault

MODES = {"none": 0, "one": 1, "two_person": 2}
PENDING, RUN, REJECT = "pending", "run", "reject"


@dataclass(frozen=True)
class Steward:
    name: str
    key_id: str


@dataclass(frozen=True)
class StewardVote:
    """One steward's decision as it is kept with the waiting job."""

    job_id: str
    steward_key_id: str
    decision: str
    reason: str
    statement_sha256: str

    @property
    def approves(self) -> bool:
        return self.decision == "approve"

    @classmethod
    def of(cls, approval: RunApproval) -> StewardVote:
        return cls(approval.job_id, approval.steward_key_id, approval.decision, approval.reason,
                   approval.statement_sha256)

    @classmethod
    def from_entry(cls, entry: Any) -> StewardVote:
        """A kept entry; one of the wrong shape is damage, never a vote to skip (a skipped
        reject would let the job run)."""
        try:
            vote = cls(*(entry[name] for name in ("job_id", "steward_key_id", "decision", "reason",
                                                  "statement_sha256")))
        except (KeyError, TypeError) as exc:
            raise StorageFault("a job's run approvals are damaged") from exc
        if vote.decision not in DECISIONS or not all(isinstance(v, str) for v in vote.__dict__.values()):
            raise StorageFault("a job's run approvals are damaged")
        return vote


@dataclass(frozen=True)
class ApprovalOutcome:
    status: str  # PENDING, RUN or REJECT
    needed: int
    approved_by: tuple[Steward, ...]
    rejected_by: tuple[Steward, ...]
    reasons: tuple[str, ...]  # the rejects' reasons, for the researcher

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "approvals_needed": self.needed,
                "approved_by": [s.name for s in self.approved_by],
                "rejected_by": [s.name for s in self.rejected_by], "reasons": list(self.reasons)}


def approvals_needed(mode: Any) -> int:
    """How many distinct stewards must approve under ``mode``; an unknown mode refuses."""
    needed = MODES.get(mode) if isinstance(mode, str) else None
    if needed is None:
        raise ApprovalRefused(f"unknown run approval mode {mode!r}: the job cannot run",
                              hint=f"a dataset's run_approval must be one of {', '.join(MODES)}")
    return needed


def registered_stewards(researchers: Any) -> list[Steward]:
    """The data stewards a ``ResearcherRegistry`` holds now."""
    return [Steward(r.name, r.key_id) for r in researchers.all() if r.is_data_steward]


def admit(vote: StewardVote, job_id: str, researcher_key_id: str, stewards: Sequence[Steward],
          earlier: Sequence[StewardVote]) -> Steward:
    """The registered steward who cast ``vote``, if it may count; else ``ApprovalRefused``
    (or ``Replayed`` for a statement already taken)."""
    if vote.job_id != job_id:
        raise ApprovalRefused(f"the approval is about job {vote.job_id}, not {job_id}")
    steward = _index(stewards).get(vote.steward_key_id)
    if steward is None:
        raise ApprovalRefused(f"key {vote.steward_key_id} is not registered as a data steward",
                              hint="register it with 'rapha-edge researchers add NAME KEY --role data-steward'")
    if steward.key_id == researcher_key_id:
        raise ApprovalRefused(f"{steward.name} submitted job {job_id}: the job's own researcher cannot approve it",
                              hint="another data steward must decide")
    for before in earlier:
        if before.statement_sha256 == vote.statement_sha256:
            raise Replayed("this approval statement was already received", hint="sign every decision afresh")
        if before.steward_key_id == steward.key_id:
            raise ApprovalRefused(f"{steward.name} already decided on job {job_id} ({before.decision}); "
                                  "one steward counts once", hint="a different data steward must decide")
    return steward


def approval_outcome(mode: Any, job_id: str, researcher_key_id: str, stewards: Sequence[Steward],
                     votes: Sequence[StewardVote]) -> ApprovalOutcome:
    """Run once enough distinct stewards approved; reject on any reject; else pending.
    ``votes`` are those kept for this job: one about another job is damage (StorageFault)."""
    needed = approvals_needed(mode)
    if any(vote.job_id != job_id for vote in votes):
        raise StorageFault(f"job {job_id}'s run approvals hold one about another job (damaged)")
    index = _index(stewards)
    approved, seen = [], set()
    for vote in votes:
        steward = index.get(vote.steward_key_id)
        if steward is None or steward.key_id in seen or steward.key_id == researcher_key_id or not vote.approves:
            continue
        seen.add(steward.key_id)
        approved.append(steward)
    rejects = [vote for vote in votes if not vote.approves]
    rejected = tuple(index.get(v.steward_key_id, Steward("(no longer registered)", v.steward_key_id))
                     for v in rejects)
    status = REJECT if rejects else RUN if len(approved) >= needed else PENDING
    return ApprovalOutcome(status, needed, tuple(approved), rejected, tuple(v.reason for v in rejects))


def kept_entry(steward: Steward, approval: RunApproval) -> dict[str, Any]:
    """The entry kept for an admitted decision: the vote, who cast it and the signed envelope."""
    return {"job_id": approval.job_id, "steward": steward.name, **approval.summary(),
            "envelope": approval.envelope}


def votes_of(entries: Sequence[Mapping[str, Any]]) -> list[StewardVote]:
    return [StewardVote.from_entry(entry) for entry in entries]


def _index(stewards: Sequence[Steward]) -> dict[str, Steward]:
    return {steward.key_id: steward for steward in stewards}
