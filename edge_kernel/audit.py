"""The append-only, hash-chained audit log (S7).

Every job event is appended *before* the edge acts on it, so the log can never show less
than what happened. Each entry's hash covers its content and the previous entry's hash;
changing, removing or reordering any entry breaks every hash after it, which
``rapha-edge audit verify`` reports. Details hold ids, digests and the edge's own
reason strings, never record data.

Removing entries from the end, or all of them, leaves a chain that checks: only a head
kept elsewhere shows it. After each append the head (entry count and last hash) is
written to a head file beside the database (``audit_head.py``), and each anchor batch
commits to the head on chain; the edge compares the log with both before it serves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.errors import RaphaError
from jupyter_rapha.protocol.receipt import sha256_hex

from .audit_head import AuditHead, HeadFile
from .db import Database

GENESIS = "0" * 64
REFUSAL_WINDOW_SECONDS = 60.0
log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(seq: int, ts: str, event: str, job_id: str | None, actor: str | None,
               detail: dict[str, Any], prev: str) -> str:
    body = {"seq": seq, "ts": ts, "event": event, "job_id": job_id, "actor": actor, "detail": detail, "prev": prev}
    return sha256_hex(canonical_json(body))


def _text(value: str | None) -> str:
    # The C encoder json.dumps(ensure_ascii=False) uses: RFC 8785's string form.
    return "null" if value is None else encode_basestring(value)


def stored_entry_hash(seq: int, ts: str, event: str, job_id: str | None, actor: str | None,
                      detail_text: str, prev: str) -> str:
    """``entry_hash`` over the stored row, without parsing it: the keys in JCS order and
    the detail as stored (appended in canonical form). About five times faster than
    re-encoding each row (benchmarks/bench_audit.py: 100k entries in about 3 s on a busy
    2-core machine), so the edge checks the whole log at every start; a row whose detail
    is not in canonical form is checked the slow way before it is called broken."""
    body = (f'{{"actor":{_text(actor)},"detail":{detail_text},"event":{_text(event)},"job_id":{_text(job_id)},'
            f'"prev":{_text(prev)},"seq":{int(seq)},"ts":{_text(ts)}}}')
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class AuditCheck:
    ok: bool
    entries: int
    first_bad_seq: int | None
    head: str


class AuditLog:
    def __init__(self, db: Database, head_file: HeadFile | None = None) -> None:
        self.db = db
        self.head_file = head_file

    def append(self, event: str, *, job_id: str | None = None, actor: str | None = None,
               detail: dict[str, Any] | None = None) -> str:
        detail = detail or {}
        with self.db.lock:  # the head file follows the log in the order entries were made
            with self.db.transaction() as conn:
                row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
                ts = utc_now()
                digest = entry_hash(seq, ts, event, job_id, actor, detail, prev)
                conn.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?)",
                             (seq, ts, event, job_id, actor, canonical_json(detail).decode(), prev, digest))
            if self.head_file is not None:
                self.head_file.record(AuditHead(seq, digest))  # after the commit: never ahead of the log
        return digest

    def head(self) -> AuditHead:
        rows = self.db.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        return AuditHead(rows[0]["seq"], rows[0]["hash"]) if rows else AuditHead(0, GENESIS)

    def hash_at(self, seq: int) -> str | None:
        if seq == 0:
            return GENESIS
        rows = self.db.query("SELECT hash FROM audit WHERE seq=?", (seq,))
        return rows[0]["hash"] if rows else None

    def entries(self, job_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit ORDER BY seq"
        params: tuple[str, ...] = ()
        if job_id:
            sql, params = "SELECT * FROM audit WHERE job_id=? ORDER BY seq", (job_id,)
        return [dict(row) | {"detail": json.loads(row["detail"])} for row in self.db.query(sql, params)]

    def verify(self, page: int = 5000) -> AuditCheck:
        """Recompute every hash, a page at a time (the lock is not held for the whole log)."""
        prev, count = GENESIS, 0
        while True:
            rows = self.db.query("SELECT seq, ts, event, job_id, actor, detail, prev, hash FROM audit"
                                 " WHERE seq > ? ORDER BY seq LIMIT ?", (count, page), plain=True)
            for seq, ts, event, job_id, actor, detail, stored_prev, digest in rows:
                count += 1
                if seq != count or stored_prev != prev or not _hash_holds(
                        digest, seq, ts, event, job_id, actor, detail, prev):
                    return AuditCheck(False, count, seq, prev)
                prev = digest
            if len(rows) < page:
                return AuditCheck(True, count, None, prev)


def _hash_holds(digest: str, seq: int, ts: str, event: str, job_id: str | None, actor: str | None,
                detail: str, prev: str) -> bool:
    if stored_entry_hash(seq, ts, event, job_id, actor, detail, prev) == digest:
        return True
    try:
        return entry_hash(seq, ts, event, job_id, actor, json.loads(detail), prev) == digest
    except (ValueError, TypeError, RaphaError):
        return False


class RefusalTally:
    """Refusals of requests that nobody authenticated, as one ``request.reject`` summary
    row per window (counts by refusal kind and HTTP method) rather than one row each.

    Anyone can send such a request, so a row each would let an anonymous client grow the
    hash-chained log without bound. Such a refusal acts on nothing (no job, no state), so
    writing its summary after the answer keeps S7. The row is written when the window
    that the first refusal opened ends, and by ``flush`` when the edge stops."""

    def __init__(self, audit: AuditLog, window_seconds: float = REFUSAL_WINDOW_SECONDS) -> None:
        self._audit = audit
        self._window = window_seconds
        self._lock = threading.Lock()
        self._kinds: Counter[str] = Counter()
        self._methods: Counter[str] = Counter()
        self._first = self._last = ""
        self._timer: threading.Timer | None = None

    def count(self, kind: str, method: str) -> None:
        with self._lock:
            self._last = utc_now()
            if not self._kinds:
                self._first = self._last
                self._start_timer()
            self._kinds[kind] += 1
            self._methods[method[:16]] += 1

    def flush(self) -> None:
        """Append the summary of the refusals counted so far, if any."""
        with self._lock:
            if not self._kinds:
                return
            detail = {"summary": True, "refused": sum(self._kinds.values()), "kinds": dict(self._kinds),
                      "methods": dict(self._methods), "first": self._first, "last": self._last,
                      "window_seconds": self._window}
            self._audit.append("request.reject", detail=detail)  # counts are kept if this fails
            self._kinds.clear()
            self._methods.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _start_timer(self) -> None:
        self._timer = threading.Timer(self._window, self._flush_in_background)
        self._timer.daemon = True
        self._timer.start()

    def _flush_in_background(self) -> None:
        try:
            self.flush()
        except RaphaError as exc:  # counts kept, tried again next window; a timer has no caller to tell
            log.error("audit: refusal summary not written: %s", exc.diagnostics())
            with self._lock:
                self._start_timer()
