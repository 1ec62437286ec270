"""The append-only, hash-chained audit log (S7).

Every job event is appended *before* the edge acts on it, so the log can never show less
than what happened. Each entry's hash covers its content and the previous entry's hash;
changing, removing or reordering any entry breaks every hash after it, which
``rapha-edge audit verify`` reports. Details hold ids, digests and the edge's own
reason strings, never record data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.receipt import sha256_hex

from .db import Database

GENESIS = "0" * 64


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(seq: int, ts: str, event: str, job_id: str | None, actor: str | None,
               detail: dict[str, Any], prev: str) -> str:
    body = {"seq": seq, "ts": ts, "event": event, "job_id": job_id, "actor": actor, "detail": detail, "prev": prev}
    return sha256_hex(canonical_json(body))


@dataclass(frozen=True)
class AuditCheck:
    ok: bool
    entries: int
    first_bad_seq: int | None
    head: str


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, event: str, *, job_id: str | None = None, actor: str | None = None,
               detail: dict[str, Any] | None = None) -> str:
        detail = detail or {}
        with self.db.transaction() as conn:
            row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            ts = utc_now()
            digest = entry_hash(seq, ts, event, job_id, actor, detail, prev)
            conn.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?)",
                         (seq, ts, event, job_id, actor, canonical_json(detail).decode(), prev, digest))
        return digest

    def entries(self, job_id: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM audit ORDER BY seq", ()
        if job_id:
            sql, params = "SELECT * FROM audit WHERE job_id=? ORDER BY seq", (job_id,)
        return [dict(row) | {"detail": json.loads(row["detail"])} for row in self.db.query(sql, params)]

    def verify(self) -> AuditCheck:
        prev, count = GENESIS, 0
        for row in self.db.query("SELECT * FROM audit ORDER BY seq"):
            count += 1
            expected = entry_hash(row["seq"], row["ts"], row["event"], row["job_id"], row["actor"],
                                  json.loads(row["detail"]), prev)
            if row["seq"] != count or row["prev"] != prev or row["hash"] != expected:
                return AuditCheck(False, count, row["seq"], prev)
            prev = row["hash"]
        return AuditCheck(True, count, None, prev)
