"""The audit log's head, kept outside the database, and the check the edge makes at start.

A hash chain shows an edited entry, but not entries removed from its end, nor an emptied
table or a deleted database: what is left still checks, as a shorter chain or a new
genesis. So the head (entry count and last hash) is kept in two more places: a head file
beside the database, rewritten atomically after every append, and the anchor batches,
whose on-chain roots commit to the head when each batch was formed (``anchor/outbox.py``).
Before it serves, the edge verifies every hash and requires the log to reach both: at
least as many entries, and the recorded hash at the recorded count. A log that falls
short is TRUNCATED, one that differs is BROKEN, and the edge refuses to start, naming the
file and the way back. ``rapha-edge audit accept`` records an accepted loss in the log
itself (event ``audit.accept``), so that nothing disappears without trace.

The head file is written after the commit it follows, so after a crash it can only lag
the log (which the check allows), never lead it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from jupyter_rapha.protocol.errors import AuditDamaged

from .health import IO_ERROR, StorageHealth, os_error_problem

if TYPE_CHECKING:
    from .audit import AuditLog

log = logging.getLogger(__name__)

HEAD_FILE = "audit-head.json"
HEAD_FORMAT = "rapha-audit-head/v1"
ACCEPT_EVENT = "audit.accept"


class AuditHead(NamedTuple):
    """A tuple (entries, head) as the outbox's batch tree takes it."""

    entries: int
    head: str

    def to_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "head": self.head}


class HeadFile:
    def __init__(self, path: Path, health: StorageHealth | None = None) -> None:
        self.path = path
        self.health = health

    def read(self) -> AuditHead | None:
        """The recorded head; None when there is no file. A damaged file raises."""
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise AuditDamaged(f"the audit head file {self.path} cannot be read ({exc})",
                               hint=_ACCEPT_HINT) from exc
        entries, head = (document.get("entries"), document.get("head")) if isinstance(document, dict) else (None, None)
        if (document.get("format") != HEAD_FORMAT or not isinstance(entries, int) or entries < 0
                or not isinstance(head, str) or len(head) != 64):
            raise AuditDamaged(f"the audit head file {self.path} is not a {HEAD_FORMAT} document",
                               hint=_ACCEPT_HINT)
        return AuditHead(entries, head)

    def record(self, head: AuditHead) -> None:
        """Write the head after an append. A failure leaves the old file (it lags, which
        start allows) and stops new jobs through the storage health."""
        try:
            self.write(head)
        except OSError as exc:
            log.error("audit head file not updated: %s", exc.strerror or type(exc).__name__)
            if self.health is not None:
                self.health.report(os_error_problem(exc) or IO_ERROR)

    def write(self, head: AuditHead) -> None:
        data = json.dumps({"format": HEAD_FORMAT, **head.to_dict()}).encode()
        staging = self.path.with_name(f".{self.path.name}.partial")
        with open(staging, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the new content is on disk before the name points at it
        os.replace(staging, self.path)


_ACCEPT_HINT = ("restore the edge's state directory from a backup; if the loss is known and accepted, "
                "'rapha-edge audit accept' records it in the log and starts the head anew")


@dataclass(frozen=True)
class AuditStatus:
    """What ``rapha-edge audit verify`` prints and the start refuses on."""

    state: str  # "intact", "broken", "truncated", "missing"
    entries: int
    head: str
    message: str
    hint: str = ""
    unmet: tuple[AuditHead, ...] = ()  # the recorded heads the log does not reach

    @property
    def ok(self) -> bool:
        return self.state == "intact"

    def refuse(self) -> None:
        if not self.ok:
            raise AuditDamaged(self.message, hint=self.hint)


def missing_database(db_path: Path, head_file: Path) -> AuditStatus:
    held = "keys and an audit head file" if head_file.exists() else "keys"
    return AuditStatus("missing", 0, "", f"audit log MISSING: the edge database {db_path} does not exist, "
                                          f"but this edge has {held}", _ACCEPT_HINT)


def check_audit(audit: AuditLog, head_file: HeadFile, anchored: AuditHead | None) -> AuditStatus:
    """Verify every hash, then hold the log against the head file and the last anchored head."""
    where = audit.db.path
    check = audit.verify()
    if not check.ok:
        return AuditStatus("broken", check.entries, check.head,
                           f"audit log BROKEN at entry {check.first_bad_seq} of {where}: "
                           "an entry was changed, removed or reordered",
                           "restore the edge database from a backup taken before the damage")
    recorded = head_file.read()
    if recorded is None and check.entries:
        return AuditStatus("truncated", check.entries, check.head,
                           f"audit log UNPROVEN: the head file {head_file.path} is missing while the log in "
                           f"{where} holds {check.entries} entries, so entries removed from its end would not show",
                           _ACCEPT_HINT)
    expected = [(f"the head file {head_file.path}", recorded), ("the last anchored batch", anchored)]
    accepted = _accepted(audit)
    unmet = [(name, head) for name, head in expected
             if head is not None and head.to_dict() not in accepted and _short_of(audit, check.entries, head)]
    if unmet:
        name, head = unmet[0]
        state = "truncated" if check.entries < head.entries else "broken"
        return AuditStatus(state, check.entries, check.head,
                           f"audit log {state.upper()}: {where} {_short_of(audit, check.entries, head)}, "
                           f"but {name} records {head.entries} entries with head {head.head[:16]}…",
                           _ACCEPT_HINT, tuple(h for _, h in unmet))
    reached = "".join(f"; reaches {name}" for name, head in expected if head is not None)
    return AuditStatus("intact", check.entries, check.head,
                       f"audit log intact: {check.entries} entries, head {check.head[:16]}…{reached}")


def _short_of(audit: AuditLog, entries: int, head: AuditHead) -> str:
    if entries < head.entries:
        return f"holds {entries} entries"
    if audit.hash_at(head.entries) != head.head:
        return f"has a different entry {head.entries}"
    return ""


def _accepted(audit: AuditLog) -> list[dict[str, Any]]:
    """The heads an operator declared lost with 'rapha-edge audit accept'."""
    rows = audit.db.query("SELECT detail FROM audit WHERE event=?", (ACCEPT_EVENT,))
    return [head for row in rows for head in json.loads(row["detail"]).get("lost", [])]


def accept_loss(audit: AuditLog, status: AuditStatus, reason: str) -> str:
    """Record in the log that the heads it does not reach are lost, then move the head on."""
    if status.state == "broken" and not status.unmet:
        raise AuditDamaged("a log with a broken hash chain cannot be accepted", hint=status.hint)
    detail = {"lost": [h.to_dict() for h in status.unmet], "found": {"entries": status.entries, "head": status.head},
              "reason": reason[:200]}
    return audit.append(ACCEPT_EVENT, actor="operator", detail=detail)


def last_anchored_head(db: Any) -> AuditHead | None:
    """The furthest head an anchor batch committed to (None before the first such batch)."""
    columns = {row[1] for row in db.query("PRAGMA table_info(anchor_batches)")}
    if "audit_entries" not in columns:
        return None
    rows = db.query("SELECT audit_entries, audit_head FROM anchor_batches WHERE audit_entries IS NOT NULL"
                    " ORDER BY audit_entries DESC LIMIT 1")
    return AuditHead(rows[0]["audit_entries"], rows[0]["audit_head"]) if rows else None
