"""The anchor outbox: receipts wait here until their batch root is on chain.

A receipt enters as its envelope digest. A background thread groups waiting digests into
a batch (up to ``batch_size``, or whatever waited ``batch_interval_seconds``), signs ONE
transaction carrying the batch's Merkle root, *stores the signed bytes*, then sends them.
After a crash the stored transaction is sent again, never re-signed while its nonce is
still open, so a root is published at most once and no receipt is anchored twice. When the
transaction has the configured confirmations, each receipt's anchor block (with its
inclusion proof) is written in the same database transaction that closes the batch, and
``publish`` hands it to the released receipt. Chain failures back off exponentially up
to a cap and are retried for as long as the edge runs: giving up would lose anchors.

A transaction still unmined ``bump_after_seconds`` after it was sent, at a nonce still
open, is replaced (anchors that can, ``replace_anchor``): the same root at the same nonce
with every fee raised at least 12.5%, stored before it is sent like the first. Whichever
version the chain mines closes the batch, and the receipts name that one.

When the outbox is given the audit log's head (``audit_head``), each batch commits to it
too: the head when the batch was formed is stored with the batch and becomes the tree's
last leaf, and every receipt's anchor block carries it with its own proof
(``anchor_proof.audit_head_inclusion``). A log later shorter than an anchored head is
refused at the edge's start (``audit_head.py``) and visible to any receipt holder.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol
from collections.abc import Callable

from jupyter_rapha.protocol.anchor_proof import batch_anchor, batch_tree, with_audit_head
from jupyter_rapha.protocol.errors import AnchorFault, BadInput

from .base import BatchAnchor, ReplaceableAnchor, SignedAnchor

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS anchor_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, envelope_sha256 TEXT UNIQUE NOT NULL,
    job_id TEXT NOT NULL, enqueued REAL NOT NULL, batch_id INTEGER, anchor TEXT,
    published TEXT);
CREATE TABLE IF NOT EXISTS escrow_claims (
    job_id TEXT PRIMARY KEY, envelope_sha256 TEXT NOT NULL, records INTEGER NOT NULL,
    price_units TEXT NOT NULL, state TEXT NOT NULL, raw TEXT, tx_hash TEXT, nonce INTEGER,
    claim TEXT, detail TEXT, enqueued REAL NOT NULL);
CREATE TABLE IF NOT EXISTS anchor_batches (
    batch_id INTEGER PRIMARY KEY AUTOINCREMENT, root TEXT NOT NULL, size INTEGER NOT NULL,
    raw TEXT NOT NULL, tx_hash TEXT NOT NULL, nonce INTEGER NOT NULL, state TEXT NOT NULL,
    block_number INTEGER, created REAL NOT NULL);
"""
# publish() answers: "done" (the released receipt now carries the anchor), "later" (the
# job is not released yet; try again next round) or "dropped" (the job will never be).
Publisher = Callable[[str, str, dict[str, Any]], str]
# publish_claim() answers the same for a mined escrow claim (the receipt's settlement_claim).
ClaimPublisher = Callable[[str, str, dict[str, Any]], str]
# A claim of 0 records (a job that ended without release: its lock refunded) names no receipt.
NO_ENVELOPE = "00" * 32
# The audit log's head now: (entries, head hash).
AuditHeadSource = Callable[[], tuple[int, str]]


class Claimer(Protocol):
    """Claims a job's escrow (``anchor/escrow.EscrowClaimer``), in the outbox's two phases."""

    def sign_claim(self, job_id: str, records: int, envelope_sha256: str) -> SignedAnchor:
        """Sign the claim at the edge account's next nonce; BadInput when the contract
        refuses it (no lock for the job, already claimed, over its budget)."""
        ...

    def claim_result(self, job_id: str, tx_hash: str, block_number: int, price_units: int) -> dict[str, Any]:
        """The receipt's ``settlement_claim`` block for the mined claim."""
        ...


@dataclass(frozen=True)
class OutboxConfig:
    batch_size: int = 100
    batch_interval_seconds: float = 2.0
    min_confirmations: int = 1
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    poll_seconds: float = 0.2
    mine_timeout_seconds: float = 120.0
    # An anchor transaction sent this long ago and still unmined at an open nonce is
    # replaced by one with fees raised 12.5% (an underpriced one would wait forever).
    bump_after_seconds: float = 180.0


class Outbox:
    def __init__(self, db: Any, anchor: BatchAnchor, publish: Publisher, config: OutboxConfig = OutboxConfig(),
                 audit_head: AuditHeadSource | None = None, claimer: Claimer | None = None,
                 publish_claim: ClaimPublisher | None = None) -> None:
        self.db, self.anchor, self.publish, self.config = db, anchor, publish, config
        self.audit_head, self.claimer, self.publish_claim = audit_head, claimer, publish_claim
        with db.transaction() as conn:
            for statement in _statements(SCHEMA):  # executescript would end the transaction
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(anchor_batches)")}
            added = (("sent", "REAL"), ("replaced", "TEXT"), ("audit_entries", "INTEGER"), ("audit_head", "TEXT"))
            for column, kind in added:  # added after the first release
                if column not in columns:
                    conn.execute(f"ALTER TABLE anchor_batches ADD COLUMN {column} {kind}")
            if "published" not in {row[1] for row in conn.execute("PRAGMA table_info(escrow_claims)")}:
                conn.execute("ALTER TABLE escrow_claims ADD COLUMN published TEXT")
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush = False
        self.failures = 0  # consecutive failed rounds; drives the backoff
        self.failed_rounds = 0  # all failed rounds; release waits stop at the next one
        self._thread: threading.Thread | None = None

    # -- intake ---------------------------------------------------------------------
    def enqueue(self, job_id: str, envelope_sha256: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO anchor_outbox (envelope_sha256, job_id, enqueued) VALUES (?,?,?)",
                         (envelope_sha256, job_id, time.time()))
        self._wake.set()

    def enqueue_claim(self, job_id: str, envelope_sha256: str, records: int, price_units: int) -> None:
        """Queue the escrow claim for a released job. The job id is the key: a job is
        queued once, whatever calls this again (and the contract refuses a second claim)."""
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO escrow_claims (job_id, envelope_sha256, records, price_units, state,"
                         " enqueued) VALUES (?,?,?,?,'queued',?)",
                         (job_id, envelope_sha256, int(records), str(int(price_units)), time.time()))
        self._wake.set()

    def claim_of(self, job_id: str) -> dict[str, Any]:
        """``{"state": "queued" | "signed" | "mined" | "refused", "claim"?, "detail"?}``."""
        rows = self.db.query("SELECT state, claim, detail FROM escrow_claims WHERE job_id=?", (job_id,))
        if not rows:
            return {"state": "none"}
        row = rows[0]
        return {"state": row["state"], **({"claim": json.loads(row["claim"])} if row["claim"] else {}),
                **({"detail": row["detail"]} if row["detail"] else {})}

    def wait_anchored(self, envelope_sha256: str, timeout: float) -> dict[str, Any] | None:
        """The anchor block once the receipt is anchored; None when the time is up or a
        round fails first (the chain is down: release now, marked pending)."""
        deadline = time.monotonic() + timeout
        failed_before = self.failed_rounds
        with self._changed:
            while True:
                anchor = self.anchor_of(envelope_sha256)
                left = deadline - time.monotonic()
                if anchor is not None or left <= 0 or self.failed_rounds != failed_before:
                    return anchor
                self._changed.wait(min(left, 0.5))

    def anchor_of(self, envelope_sha256: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT anchor FROM anchor_outbox WHERE envelope_sha256=?", (envelope_sha256,))
        return json.loads(rows[0]["anchor"]) if rows and rows[0]["anchor"] else None

    def counts(self) -> dict[str, int]:
        row = self.db.query(
            "SELECT SUM(anchor IS NULL) AS waiting, SUM(anchor IS NOT NULL AND published IS NULL) AS unpublished,"
            " (SELECT COUNT(*) FROM anchor_batches) AS batches FROM anchor_outbox")[0]
        return {k: int(row[k] or 0) for k in ("waiting", "unpublished", "batches")}

    # -- the background thread --------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="rapha-anchor-outbox", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def flush(self) -> None:
        """Batch whatever waits now, without waiting for the interval."""
        self._flush = True
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            delay = self.config.poll_seconds
            try:
                busy = self.step()
                if busy:  # only a round that reached the chain ends the backoff
                    self.failures = 0
                delay = 0 if busy else self.config.poll_seconds
            except AnchorFault as exc:
                delay = self._failed(exc.diagnostics())
            except Exception:  # the thread must outlive any one bad round; it retries
                log.exception("anchor outbox round failed")
                delay = self._failed("unexpected error")
            self._wake.wait(delay)
            self._wake.clear()

    def _failed(self, reason: str) -> float:
        self.failures += 1
        self.failed_rounds += 1
        with self._changed:
            self._changed.notify_all()
        delay = min(self.config.retry_initial_seconds * 2.0 ** (self.failures - 1), self.config.retry_max_seconds)
        log.warning("anchoring deferred (%s); retry in %.1f s", reason, delay)
        return delay

    # -- one round ----------------------------------------------------------------------
    def step(self) -> bool:
        """Publish what is anchored, finish an open batch, form a new one. True when
        something moved (the loop then goes again at once)."""
        moved = self._publish_ready()
        open_batch = self._open_batch()
        if open_batch is None and self._due() and not self._claim_in_flight():
            open_batch = self._form_batch()
        if open_batch is not None:
            self._finish(open_batch)
            moved = True
            self._publish_ready()
        # Claims after anchors, one edge transaction in flight at a time: a claim is signed
        # only when no anchor batch is open, and a batch is formed only after the claim
        # signed before it is mined, so the two never take the same nonce.
        if self.claimer is not None and self._open_batch() is None:
            moved = self._claim_round() or moved
            moved = self._publish_claims() or moved
        return moved

    def _publish_claims(self) -> bool:
        """Hand each mined claim of a released job to ``publish_claim`` (the released
        receipt's settlement_claim), until it answers done or dropped."""
        if self.publish_claim is None:
            return False
        rows = self.db.query("SELECT job_id, envelope_sha256, claim FROM escrow_claims WHERE state='mined'"
                             " AND published IS NULL AND envelope_sha256 != ? ORDER BY enqueued", (NO_ENVELOPE,))
        moved = False
        for row in rows:
            outcome = self.publish_claim(row["job_id"], row["envelope_sha256"], json.loads(row["claim"]))
            if outcome in ("done", "dropped"):
                with self.db.transaction() as conn:
                    conn.execute("UPDATE escrow_claims SET published=? WHERE job_id=?", (outcome, row["job_id"]))
                moved = True
        return moved

    # -- escrow claims --------------------------------------------------------------------
    def _claim_in_flight(self) -> bool:
        """A claim signed (and stored) but not yet recorded mined: it holds the next nonce."""
        return self.claimer is not None and bool(
            self.db.query("SELECT 1 FROM escrow_claims WHERE state='signed' LIMIT 1"))

    def _claim_round(self) -> bool:
        """Finish a claim that was signed (after a crash too: the same stored bytes are
        sent again), then sign and finish the oldest queued claim whose receipt is anchored."""
        claimer = self.claimer
        assert claimer is not None
        rows = self.db.query("SELECT * FROM escrow_claims WHERE state='signed' ORDER BY enqueued LIMIT 1")
        if not rows:
            rows = self.db.query(  # a released job's claim waits for its receipt's anchor; a refund does not
                "SELECT c.* FROM escrow_claims c LEFT JOIN anchor_outbox a ON a.envelope_sha256 = c.envelope_sha256"
                " WHERE c.state='queued' AND (a.anchor IS NOT NULL OR (c.envelope_sha256 = ? AND c.records = 0))"
                " ORDER BY c.enqueued LIMIT 1", (NO_ENVELOPE,))
            if not rows:
                return False
            row = dict(rows[0])
            try:
                signed = claimer.sign_claim(row["job_id"], int(row["records"]), row["envelope_sha256"])
            except BadInput as exc:  # the contract refuses it: no lock, already claimed, ...
                log.warning("escrow claim for job %s refused: %s", row["job_id"], exc.diagnostics())
                with self.db.transaction() as conn:
                    conn.execute("UPDATE escrow_claims SET state='refused', detail=? WHERE job_id=?",
                                 (exc.diagnostics(), row["job_id"]))
                return True
            with self.db.transaction() as conn:  # stored before it is sent, as every anchor transaction
                conn.execute("UPDATE escrow_claims SET state='signed', raw=?, tx_hash=?, nonce=? WHERE job_id=?",
                             (signed.raw.hex(), signed.tx_hash, signed.nonce, row["job_id"]))
            row.update(raw=signed.raw.hex(), tx_hash=signed.tx_hash, nonce=signed.nonce)
        else:
            row = dict(rows[0])
        block = self.anchor.mined_block(row["tx_hash"])
        if block is None and self.anchor.confirmed_nonce() > int(row["nonce"]):
            block = self.anchor.mined_block(row["tx_hash"])
            if block is None:  # the nonce went to another transaction: sign again (the contract
                with self.db.transaction() as conn:  # refuses it if the job was claimed meanwhile)
                    conn.execute("UPDATE escrow_claims SET state='queued', raw=NULL, tx_hash=NULL, nonce=NULL"
                                 " WHERE job_id=?", (row["job_id"],))
                return True
        if block is None:
            self.anchor.broadcast(bytes.fromhex(row["raw"]))
            block = self._wait_claim_mined(row["tx_hash"])
        self._wait_confirmed(block)
        result = claimer.claim_result(row["job_id"], row["tx_hash"], block, int(row["price_units"]))
        with self.db.transaction() as conn:
            conn.execute("UPDATE escrow_claims SET state='mined', claim=? WHERE job_id=?",
                         (json.dumps(result, sort_keys=True), row["job_id"]))
        return True

    def _wait_claim_mined(self, tx_hash: str) -> int:
        deadline = time.monotonic() + self.config.mine_timeout_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            block = self.anchor.mined_block(tx_hash)
            if block is not None:
                return block
            time.sleep(self.config.poll_seconds)
        raise AnchorFault("the escrow claim was not mined in time; it is sent again on the next round")

    def _due(self) -> bool:
        row = self.db.query("SELECT COUNT(*) AS n, MIN(enqueued) AS oldest FROM anchor_outbox"
                            " WHERE batch_id IS NULL")[0]
        if not row["n"]:
            self._flush = False
            return False
        aged = time.time() - float(row["oldest"]) >= self.config.batch_interval_seconds
        return self._flush or aged or row["n"] >= self.config.batch_size

    def _open_batch(self) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM anchor_batches WHERE state='signed' ORDER BY batch_id LIMIT 1")
        return dict(rows[0]) if rows else None

    def _form_batch(self) -> dict[str, Any]:
        rows = self.db.query("SELECT seq, envelope_sha256 FROM anchor_outbox WHERE batch_id IS NULL"
                             " ORDER BY seq LIMIT ?", (self.config.batch_size,))
        head = self.audit_head() if self.audit_head is not None else None
        tree = batch_tree([r["envelope_sha256"] for r in rows], head)
        signed = self.anchor.sign_anchor(tree.root)  # needs the chain (nonce, fees): may fail, nothing stored
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO anchor_batches (root, size, raw, tx_hash, nonce, state, created, audit_entries,"
                " audit_head) VALUES (?,?,?,?,?,?,?,?,?)",
                (tree.root.hex(), len(tree), signed.raw.hex(), signed.tx_hash, signed.nonce, "signed", time.time(),
                 *(head or (None, None))))
            batch_id = cursor.lastrowid
            conn.executemany("UPDATE anchor_outbox SET batch_id=? WHERE seq=?", [(batch_id, r["seq"]) for r in rows])
        self._flush = False
        return dict(self.db.query("SELECT * FROM anchor_batches WHERE batch_id=?", (batch_id,))[0])

    def _finish(self, batch: dict[str, Any]) -> None:
        block, batch = self._mined(batch)
        if block is None and self.anchor.confirmed_nonce() > batch["nonce"]:
            block, batch = self._mined(batch)  # one of ours may have been mined meanwhile
            if block is None:
                # Our nonce was used by a transaction that is not ours (someone else holds
                # the key, or a node dropped ours): this one can never be mined, sign anew.
                batch = self._resign(batch)
        if block is None:
            if self._stuck(batch):
                batch = self._bump(batch)
            self.anchor.broadcast(bytes.fromhex(batch["raw"]))
            if batch.get("sent") is None:
                batch["sent"] = time.time()
                with self.db.transaction() as conn:
                    conn.execute("UPDATE anchor_batches SET sent=? WHERE batch_id=?",
                                 (batch["sent"], batch["batch_id"]))
            block, batch = self._wait_mined(batch)
        self._wait_confirmed(block)
        self._close(batch, block)

    def _hashes(self, batch: dict[str, Any]) -> list[str]:
        """The batch's transaction and those it replaced: any one of them may be mined."""
        return [batch["tx_hash"], *json.loads(batch.get("replaced") or "[]")]

    def _mined(self, batch: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
        for tx_hash in self._hashes(batch):
            block = self.anchor.mined_block(tx_hash)
            if block is not None:
                return block, dict(batch, tx_hash=tx_hash)  # the receipts name the one mined
        return None, batch

    def _stuck(self, batch: dict[str, Any]) -> bool:
        return (isinstance(self.anchor, ReplaceableAnchor) and batch.get("sent") is not None
                and time.time() - float(batch["sent"]) >= self.config.bump_after_seconds)

    def _bump(self, batch: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(self.anchor, ReplaceableAnchor):
            raise AnchorFault("this anchor cannot replace a stuck transaction")
        stuck = SignedAnchor(bytes.fromhex(batch["raw"]), batch["tx_hash"], int(batch["nonce"]))
        signed = self.anchor.replace_anchor(bytes.fromhex(batch["root"]), stuck)
        if signed.nonce != stuck.nonce:
            raise AnchorFault("a replacement anchor transaction must keep its nonce")
        replaced = json.dumps(self._hashes(batch))
        log.warning("anchor batch %s: not mined after %.0f s; sent again with fees raised",
                    batch["batch_id"], time.time() - float(batch["sent"]))
        with self.db.transaction() as conn:  # stored before it is sent, as every anchor transaction
            conn.execute("UPDATE anchor_batches SET raw=?, tx_hash=?, replaced=?, sent=NULL"
                         " WHERE batch_id=? AND state='signed'",
                         (signed.raw.hex(), signed.tx_hash, replaced, batch["batch_id"]))
        return dict(batch, raw=signed.raw.hex(), tx_hash=signed.tx_hash, replaced=replaced, sent=None)

    def _resign(self, batch: dict[str, Any]) -> dict[str, Any]:
        log.warning("anchor batch %s: nonce %s taken by another transaction; signing again",
                    batch["batch_id"], batch["nonce"])
        signed = self.anchor.sign_anchor(bytes.fromhex(batch["root"]))
        with self.db.transaction() as conn:
            conn.execute("UPDATE anchor_batches SET raw=?, tx_hash=?, nonce=?, replaced=NULL, sent=NULL"
                         " WHERE batch_id=? AND state='signed'",
                         (signed.raw.hex(), signed.tx_hash, signed.nonce, batch["batch_id"]))
        return dict(batch, raw=signed.raw.hex(), tx_hash=signed.tx_hash, nonce=signed.nonce, replaced=None, sent=None)

    def _wait_mined(self, batch: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        deadline = time.monotonic() + self.config.mine_timeout_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            block, mined = self._mined(batch)
            if block is not None:
                return block, mined
            time.sleep(self.config.poll_seconds)
        raise AnchorFault("the anchor transaction was not mined in time; it is sent again on the next round")

    def _wait_confirmed(self, block: int) -> None:
        deadline = time.monotonic() + self.config.mine_timeout_seconds
        while self.anchor.head_block() - block + 1 < self.config.min_confirmations:
            if self._stop.is_set() or time.monotonic() >= deadline:
                raise AnchorFault("the anchor transaction does not have its confirmations yet")
            time.sleep(self.config.poll_seconds)

    def _close(self, batch: dict[str, Any], block: int) -> None:
        members = self.db.query("SELECT seq, envelope_sha256 FROM anchor_outbox WHERE batch_id=? ORDER BY seq",
                                (batch["batch_id"],))
        head = _stored_head(batch)
        tree = batch_tree([m["envelope_sha256"] for m in members], head)
        if tree.root.hex() != batch["root"]:
            raise AnchorFault("anchor batch members do not match the stored root")
        chain_id = int(self.anchor.chain_id)
        # A timestamp anchor (anchor/tsa.py) writes its own form around the stored token.
        own_form = getattr(self.anchor, "batch_anchor_block", None)
        with self.db.transaction() as conn:
            for index, member in enumerate(members):
                if own_form is not None:
                    anchor = with_audit_head(own_form(tree, index, bytes.fromhex(batch["raw"])), tree, head)
                else:
                    anchor = batch_anchor(tree, index, chain_id=chain_id, tx_hash=batch["tx_hash"], block_number=block,
                                          audit_head=head)
                conn.execute("UPDATE anchor_outbox SET anchor=? WHERE seq=?", (json.dumps(anchor), member["seq"]))
            conn.execute("UPDATE anchor_batches SET state='mined', block_number=?, tx_hash=? WHERE batch_id=?",
                         (block, batch["tx_hash"], batch["batch_id"]))
        with self._changed:
            self._changed.notify_all()

    def _publish_ready(self) -> bool:
        rows = self.db.query("SELECT seq, job_id, envelope_sha256, anchor FROM anchor_outbox"
                             " WHERE anchor IS NOT NULL AND published IS NULL ORDER BY seq")
        moved = False
        for row in rows:
            outcome = self.publish(row["job_id"], row["envelope_sha256"], json.loads(row["anchor"]))
            if outcome in ("done", "dropped"):
                with self.db.transaction() as conn:
                    conn.execute("UPDATE anchor_outbox SET published=? WHERE seq=?", (outcome, row["seq"]))
                moved = True
        return moved


def _stored_head(batch: dict[str, Any]) -> tuple[int, str] | None:
    """The audit head a batch committed to; None for batches formed before heads were."""
    if batch.get("audit_entries") is None:
        return None
    return int(batch["audit_entries"]), str(batch["audit_head"])


def _statements(schema: str) -> list[str]:
    return [part.strip() for part in schema.split(";") if part.strip()]
