"""One SQLite database per edge (jobs, audit log, nonces), shared by threads.

A single connection behind a lock keeps writes serialised, which SQLite needs anyway;
WAL and synchronous=FULL make an acknowledged write survive a crash.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from jupyter_rapha.protocol.errors import StorageFault

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


class Database:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StorageFault("the edge database cannot be opened") from exc
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._conn.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
