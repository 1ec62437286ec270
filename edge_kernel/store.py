"""The job store: one row per job, with idempotent state transitions.

    submitted -> running -> held -> completed (released)
         |          |         |
         |          |         +-> refused (a disclosure check, the release policy or an
         |          |                      output checker refused its outputs)
         +-> denied +-> denied (outputs over the output policy) / failed
         |          |
         +----------+-> cancelled (the researcher asked: DELETE /v1/jobs/{id})

Where the dataset's policy asks for a data steward's approval before code runs
(``run_approval``), a job whose gates passed goes ``submitted -> awaiting_approval`` and
waits there (a restart leaves it waiting); approved, it goes back to ``submitted`` and its
gates run again; rejected, it ends ``denied``; the researcher may cancel it meanwhile.

``held`` is neither terminal nor cancellable: the job's outputs wait edge-side, in
``state/jobs/ID/held/``, for the disclosure checks and the release decision.

A transition names the states it may start from; repeating a transition that already
happened is a no-op, any other is refused. That makes a retried worker step harmless
and a confused one loud.
"""

from __future__ import annotations

import builtins
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.contract import TERMINAL_STATES, JobState
from jupyter_rapha.protocol.errors import BadInput, NotFound, StorageFault
from jupyter_rapha.protocol.jobspec import JobSpec
from jupyter_rapha.protocol.receipt import sha256_hex

from .audit import utc_now
from .db import Database

JOB_ID_LENGTH = 32
MIN_JOB_PREFIX = 8
_JOB_REF = re.compile(rf"^[0-9a-f]{{{MIN_JOB_PREFIX},{JOB_ID_LENGTH}}}$")
STATES = tuple(JobState)
TERMINAL = tuple(state for state in JobState if state in TERMINAL_STATES)
_FROM = {
    # back from awaiting_approval once the stewards approved: its gates run again
    "submitted": ("awaiting_approval",),
    "awaiting_approval": ("submitted",),
    "running": ("submitted",),
    "held": ("running",),
    "completed": ("running", "held"),
    "refused": ("held",),
    "denied": ("submitted", "awaiting_approval", "running"),
    # from held only through an edge fault (the held outputs are removed first): a check
    # that fails refuses, it never fails the job into a state a retry could release from
    "failed": ("submitted", "running", "held"),
    "cancelled": ("submitted", "awaiting_approval", "running"),
}


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    researcher_key_id: str
    state: str
    spec: dict[str, Any]
    request_sha256: str
    dataset: str
    submitted: str
    updated: str
    gates: list[dict[str, Any]]
    reasons: list[str]
    error: dict[str, Any] | None
    progress: dict[str, Any]
    receipt: dict[str, Any] | None

    def status(self) -> dict[str, Any]:
        """What the researcher may see. Never record data: states, gate digests, reasons."""
        return {"job_id": self.job_id, "state": self.state, "dataset": self.dataset,
                "submitted": self.submitted, "updated": self.updated, "gates": self.gates,
                "reasons": self.reasons, "error": self.error, "progress": self.progress,
                "epochs_asked": _epochs_asked(self.spec)}


def _epochs_asked(spec: dict[str, Any]) -> int | None:
    # The researcher's own ask, from their signed spec: lets a view that reattaches (no
    # --epochs at hand) show epoch k/N and an ETA. None for a spec that names no number.
    epochs = (spec.get("params") or {}).get("epochs", 1)
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None


def _record(row: Any) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"], researcher_key_id=row["researcher_key_id"], state=row["state"],
        spec=json.loads(row["spec"]), request_sha256=row["request_sha256"], dataset=row["dataset"],
        submitted=row["submitted"], updated=row["updated"], gates=json.loads(row["gates"]),
        reasons=json.loads(row["reasons"]), error=json.loads(row["error"]) if row["error"] else None,
        progress=json.loads(row["progress"]), receipt=json.loads(row["receipt"]) if row["receipt"] else None,
    )


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Told (job id, state) after each move into an ended state (the settlement's refund
        # of a job that ended without release); what it raises is its own to log.
        self.on_end: Callable[[str, str], None] | None = None

    def create(self, spec: JobSpec, request_sha256: str) -> tuple[JobRecord, bool]:
        """Store a new job; return (job, created). The same spec again returns the existing job."""
        spec_json = canonical_json(spec.to_dict()).decode()
        spec_sha = sha256_hex(spec_json.encode())
        with self.db.transaction() as conn:
            row = conn.execute("SELECT spec_sha256 FROM jobs WHERE job_id=?", (spec.job_id,)).fetchone()
            if row is not None:
                if row[0] != spec_sha:
                    raise BadInput("this job id is already used by a different job", hint="use a fresh job id")
                created = False
            else:
                now = utc_now()
                conn.execute(
                    "INSERT INTO jobs (job_id, researcher_key_id, state, spec, spec_sha256, request_sha256,"
                    " dataset, submitted, updated) VALUES (?,?,?,?,?,?,?,?,?)",
                    (spec.job_id, spec.researcher_key_id, "submitted", spec_json, spec_sha, request_sha256,
                     spec.dataset, now, now))
                _append_event(conn, spec.job_id, "state", {"state": "submitted"})
                created = True
        return self.get(spec.job_id), created

    def get(self, job_id: str, researcher_key_id: str | None = None) -> JobRecord:
        rows = self.db.query("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        # Another researcher's job is reported as unknown, not as forbidden: its existence is private too.
        if not rows or (researcher_key_id is not None and rows[0]["researcher_key_id"] != researcher_key_id):
            raise NotFound(f"no job {job_id} for this researcher")
        return _record(rows[0])

    def resolve(self, job_ref: str, researcher_key_id: str) -> str:
        """The full id of the caller's one job whose id is or starts with ``job_ref`` (at
        least MIN_JOB_PREFIX hex characters). Only the caller's own jobs are searched and
        counted: another researcher's job neither matches nor makes a prefix ambiguous."""
        if not _JOB_REF.match(job_ref):
            raise BadInput(f"{job_ref!r} is not a job id: give the id, or {MIN_JOB_PREFIX} or more of its first "
                           "characters (0-9, a-f)")
        if len(job_ref) == JOB_ID_LENGTH:
            return job_ref
        rows = self.db.query("SELECT job_id FROM jobs WHERE researcher_key_id=? AND job_id LIKE ? LIMIT 50",
                             (researcher_key_id, job_ref + "%"))  # hex only: no LIKE wildcards get through
        if not rows:
            raise NotFound(f"no job {job_ref} for this researcher")
        if len(rows) > 1:
            raise BadInput(f"{len(rows) if len(rows) < 50 else 'at least 50'} of your jobs start with {job_ref}; "
                           "give more characters of the id")
        return str(rows[0]["job_id"])

    def list(self, researcher_key_id: str | None = None, limit: int = 200) -> list[JobRecord]:
        if researcher_key_id is None:
            rows = self.db.query("SELECT * FROM jobs ORDER BY submitted DESC LIMIT ?", (limit,))
        else:
            rows = self.db.query("SELECT * FROM jobs WHERE researcher_key_id=? ORDER BY submitted DESC LIMIT ?",
                                 (researcher_key_id, limit))
        return [_record(r) for r in rows]

    # ``list`` below names the method above: the builtin is spelled out in this class from here on
    def in_state(self, state: str) -> builtins.list[JobRecord]:
        return [_record(r) for r in self.db.query("SELECT * FROM jobs WHERE state=? ORDER BY submitted", (state,))]

    def transition(self, job_id: str, to_state: str, **fields: Any) -> JobRecord:
        if to_state not in _FROM:
            raise StorageFault(f"unknown job state {to_state}")
        sets = ["state=?", "updated=?"]
        values: builtins.list[str | None] = [to_state, utc_now()]
        for name, value in fields.items():
            if name not in ("gates", "reasons", "error", "progress", "receipt"):
                raise StorageFault(f"job field {name} cannot be set")
            sets.append(f"{name}=?")
            values.append(None if value is None else json.dumps(value))
        starts = _FROM[to_state]
        ended = False
        with self.db.transaction() as conn:
            cursor = conn.execute(
                f"UPDATE jobs SET {', '.join(sets)} WHERE job_id=? AND state IN ({','.join('?' * len(starts))})",
                (*values, job_id, *starts))
            if cursor.rowcount == 0:
                current = conn.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
                if current is None:
                    raise NotFound(f"no job {job_id}")
                if current[0] != to_state:
                    raise StorageFault(f"job {job_id} cannot go from {current[0]} to {to_state}")
            else:
                # In the same transaction as the state: an event is never lost or duplicated.
                _append_event(conn, job_id, "state", {"state": to_state, **_counters(fields.get("progress"))})
                ended = to_state in TERMINAL
        if ended and self.on_end is not None:
            self.on_end(job_id, to_state)
        return self.get(job_id)

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET progress=?, updated=? WHERE job_id=?",
                         (json.dumps(progress), utc_now(), job_id))
            _append_event(conn, job_id, "progress", _counters(progress))

    def append_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        with self.db.transaction() as conn:
            _append_event(conn, job_id, kind, _counters(data))

    def events(self, job_id: str, after: int = 0, limit: int = 500) -> builtins.list[dict[str, Any]]:
        """The job's events with a sequence number above ``after``, oldest first."""
        rows = self.db.query("SELECT seq, ts, kind, data FROM job_events WHERE job_id=? AND seq>?"
                             " ORDER BY seq LIMIT ?", (job_id, after, limit))
        return [{"seq": r["seq"], "ts": r["ts"], "kind": r["kind"], "data": json.loads(r["data"])} for r in rows]

    def set_receipt(self, job_id: str, receipt: dict[str, Any]) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET receipt=?, updated=? WHERE job_id=?",
                         (json.dumps(receipt), utc_now(), job_id))


EVENT_KINDS = ("state", "progress", "metrics")


def _append_event(conn: Any, job_id: str, kind: str, data: dict[str, Any]) -> None:
    # Events leave the edge as a live stream: states, counters and finite numbers only.
    if kind not in EVENT_KINDS:
        raise StorageFault(f"unknown job event kind {kind}")
    row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM job_events WHERE job_id=?", (job_id,)).fetchone()
    conn.execute("INSERT INTO job_events (job_id, seq, ts, kind, data) VALUES (?,?,?,?,?)",
                 (job_id, row[0] + 1, utc_now(), kind, json.dumps(data, allow_nan=False)))


def _counters(values: Any) -> dict[str, Any]:
    """Keep names that are plain words and values that are states or finite numbers."""
    if not isinstance(values, dict):
        return {}
    kept: dict[str, Any] = {}
    for name, value in values.items():
        if not (isinstance(name, str) and name.replace("_", "").isalnum() and len(name) <= 64):
            continue
        if name == "state" and value in STATES:
            kept[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            kept[name] = value
    return kept
