"""Authenticating researcher requests (S8): registered key, fresh timestamp, unseen nonce.

A nonce is recorded only once the signature has verified, so unauthenticated traffic
cannot fill the table or burn a real researcher's nonces.
"""

from __future__ import annotations

import sqlite3
import time

from jupyter_rapha.protocol.errors import Replayed
from jupyter_rapha.protocol.request import MAX_SKEW_SECONDS, parse_authorization, verify_request

from .db import Database
from .researchers import Researcher, ResearcherRegistry


class Authenticator:
    def __init__(self, db: Database, researchers: ResearcherRegistry, max_skew: int = MAX_SKEW_SECONDS) -> None:
        self.db = db
        self.researchers = researchers
        self.max_skew = max_skew

    def authenticate(self, header: str | None, method: str, path: str, body: bytes,
                     now: int | None = None) -> Researcher:
        now = int(time.time()) if now is None else now
        auth = parse_authorization(header)
        researcher = self.researchers.by_key_id(auth.key_id)
        verify_request(auth, researcher.key, method, path, body, now, self.max_skew)
        self._spend_nonce(auth.nonce, auth.key_id, now)
        return researcher

    def _spend_nonce(self, nonce: str, key_id: str, now: int) -> None:
        with self.db.transaction() as conn:
            # Nonces older than twice the window can no longer pass the timestamp check.
            conn.execute("DELETE FROM nonces WHERE ts < ?", (now - 2 * self.max_skew,))
            try:
                conn.execute("INSERT INTO nonces VALUES (?,?,?)", (nonce, key_id, now))
            except sqlite3.IntegrityError as exc:
                raise Replayed("this request was already received (nonce reused)",
                               hint="sign every request afresh") from exc
