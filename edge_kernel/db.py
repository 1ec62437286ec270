"""One SQLite database per edge (jobs, audit log, nonces), shared by threads.

A single connection behind a lock keeps writes serialised, which SQLite needs anyway;
WAL and synchronous=FULL make an acknowledged write survive a crash.

A failing disk (full, I/O error, damaged pages) raises ``StorageUnavailable`` and is
reported to the edge's ``StorageHealth``, which stops new jobs. The first SQLite error is
the one logged and raised: a rollback after a failed write (SQLite may already have rolled
back itself) must never hide "database or disk is full" behind its own complaint.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from jupyter_rapha.protocol.errors import StorageFault, StorageUnavailable

from .health import DAMAGED, FULL, IO_ERROR, READ_ONLY, StorageHealth

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, event TEXT NOT NULL, job_id TEXT,
    actor TEXT, detail TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY, key_id TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, researcher_key_id TEXT NOT NULL, state TEXT NOT NULL,
    spec TEXT NOT NULL, spec_sha256 TEXT NOT NULL, request_sha256 TEXT NOT NULL,
    dataset TEXT NOT NULL, submitted TEXT NOT NULL, updated TEXT NOT NULL,
    gates TEXT NOT NULL DEFAULT '[]', reasons TEXT NOT NULL DEFAULT '[]',
    error TEXT, progress TEXT NOT NULL DEFAULT '{}', receipt TEXT);
CREATE INDEX IF NOT EXISTS jobs_by_researcher ON jobs(researcher_key_id, submitted);
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, ts TEXT NOT NULL, kind TEXT NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (job_id, seq));
"""


# SQLite's primary result codes for a failing disk or file, and what they mean here.
_SQLITE_PROBLEMS = {13: FULL, 10: IO_ERROR, 8: READ_ONLY, 11: DAMAGED, 26: DAMAGED}


def sqlite_problem(exc: BaseException) -> str | None:
    """The storage problem a SQLite error stands for; None for any other error."""
    code = getattr(exc, "sqlite_errorcode", None)
    return _SQLITE_PROBLEMS.get(code & 0xFF) if isinstance(exc, sqlite3.Error) and code is not None else None


class Database:
    def __init__(self, path: Path, health: StorageHealth | None = None) -> None:
        self.path = path
        self.health = health or StorageHealth()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StorageFault(f"the edge database {path} cannot be opened: {exc}",
                               hint="restore it from a backup, or free space if the disk is full") from exc
        self._lock = threading.RLock()

    @property
    def lock(self) -> threading.RLock:
        """Held by every statement; a caller holds it to keep a write and its follow-up in order."""
        return self._lock

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                fault = self._fault(exc)  # logged before the rollback can say anything
                self._rollback()
                if fault is None:
                    raise
                raise fault from exc

    def query(self, sql: str, params: tuple[Any, ...] = (), *, plain: bool = False) -> list[sqlite3.Row]:
        """Rows by name, or plain tuples (``plain``: faster for a long scan)."""
        with self._lock:
            try:
                cursor = self._conn.execute(sql, params)
                if not plain:
                    cursor.row_factory = sqlite3.Row
                return cursor.fetchall()
            except sqlite3.Error as exc:
                fault = self._fault(exc)
                if fault is None:
                    raise
                raise fault from exc

    def quick_check(self) -> list[str]:
        """SQLite's own page and index check; [] when the file is sound."""
        try:
            rows = self.query("PRAGMA quick_check")
        except StorageUnavailable as exc:
            return [str(exc.__cause__)]
        return [] if [r[0] for r in rows] == ["ok"] else [str(r[0]) for r in rows[:5]]

    def _rollback(self) -> None:
        if not self._conn.in_transaction:
            return  # SQLite rolled back on its own (a full disk does that)
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback after a failed write failed too: %s", exc)

    def _fault(self, exc: BaseException) -> StorageUnavailable | None:
        problem = sqlite_problem(exc)
        if problem is None:
            return None
        log.error("edge database failed: %s", exc)
        self.health.report(problem)
        return StorageUnavailable(problem)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
