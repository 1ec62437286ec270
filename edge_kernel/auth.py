"""Authenticating researcher requests (S8): registered key, fresh timestamp, unseen nonce.

A nonce is recorded only once the signature has verified, so unauthenticated traffic
cannot fill the table or burn a real researcher's nonces.

When the database cannot take the nonce (its disk is full or failing), a request that
changes something is refused with 503: it could not be carried out anyway. A read (GET)
still answers, so researchers can see their jobs during the outage, but only if its nonce
is held instead in memory, where replays are refused as before; held nonces go into the
table once it takes writes again. What this leaves open: a read made during the outage
could be replayed to a restarted edge within the timestamp window (``MAX_SKEW_SECONDS``),
answering its sender's own data again; nothing changes and no one else's data is shown.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from jupyter_rapha.protocol.errors import AuthError, Replayed, StorageUnavailable
from jupyter_rapha.protocol.request import MAX_SKEW_SECONDS, parse_authorization, verify_request, verify_request_digest

from .db import Database
from .researchers import OUTPUT_CHECKER, Researcher, ResearcherRegistry

READ_ONLY_METHODS = ("GET", "HEAD")
MAX_HELD_NONCES = 100_000  # reads answered from memory during an outage; then 503


class Authenticator:
    def __init__(self, db: Database, researchers: ResearcherRegistry, max_skew: int = MAX_SKEW_SECONDS) -> None:
        self.db = db
        self.researchers = researchers
        self.max_skew = max_skew
        self._held: dict[str, tuple[str, int]] = {}  # nonce -> (key id, ts), while the table takes no writes
        self._held_lock = threading.Lock()

    def authenticate(self, header: str | None, method: str, path: str, body: bytes,
                     now: int | None = None, body_sha256: str | None = None) -> Researcher:
        """``body_sha256``: the digest a streamed body claims, checked instead of ``body``
        (the caller then holds the bytes to it as they arrive)."""
        now = int(time.time()) if now is None else now
        auth = parse_authorization(header)
        researcher = self.researchers.by_key_id(auth.key_id)
        if body_sha256 is not None:
            verify_request_digest(auth, researcher.key, method, path, body_sha256, now, self.max_skew)
        else:
            verify_request(auth, researcher.key, method, path, body, now, self.max_skew)
        if set(researcher.roles) == {OUTPUT_CHECKER}:
            # Separation of duties: a checker's key signs release decisions on the edge
            # machine; it neither submits jobs nor reads anyone's, also if it leaks.
            raise AuthError("this key is registered as an output checker only: it signs release decisions "
                            "('rapha-edge release'), not researcher requests",
                            hint="register a separate researcher key, or add --role researcher to this entry")
        if researcher.is_staff_only:
            # The same for a data steward's key: it signs run approvals, it never submits a
            # job it could then approve, nor reads anyone's.
            raise AuthError("this key is registered for hospital staff roles only "
                            f"({', '.join(researcher.roles)}): it signs decisions at the edge, not researcher "
                            "requests",
                            hint="register a separate researcher key, or add --role researcher to this entry")
        try:
            self._spend_nonce(auth.nonce, auth.key_id, now)
        except StorageUnavailable:
            if method.upper() not in READ_ONLY_METHODS:
                raise
            self._hold_nonce(auth.nonce, auth.key_id, now)
        return researcher

    def _spend_nonce(self, nonce: str, key_id: str, now: int) -> None:
        with self._held_lock:
            if nonce in self._held:
                raise _replayed()
            held = list(self._held.items())
        with self.db.transaction() as conn:
            # Nonces older than twice the window can no longer pass the timestamp check.
            conn.execute("DELETE FROM nonces WHERE ts < ?", (now - 2 * self.max_skew,))
            try:
                conn.execute("INSERT INTO nonces VALUES (?,?,?)", (nonce, key_id, now))
            except sqlite3.IntegrityError as exc:
                raise _replayed() from exc
            conn.executemany("INSERT OR IGNORE INTO nonces VALUES (?,?,?)", [(n, k, t) for n, (k, t) in held])
        if held:
            with self._held_lock:
                for spent, _ in held:
                    self._held.pop(spent, None)

    def _hold_nonce(self, nonce: str, key_id: str, now: int) -> None:
        """The table takes no writes: refuse a replay from what it holds, keep the nonce here."""
        if self.db.query("SELECT 1 FROM nonces WHERE nonce=?", (nonce,)):
            raise _replayed()
        with self._held_lock:
            if nonce in self._held:
                raise _replayed()
            for old in [n for n, (_, ts) in self._held.items() if ts < now - 2 * self.max_skew]:
                del self._held[old]
            if len(self._held) >= MAX_HELD_NONCES:
                raise StorageUnavailable("the edge's storage is full")
            self._held[nonce] = (key_id, now)


def _replayed() -> Replayed:
    return Replayed("this request was already received (nonce reused)", hint="sign every request afresh")
