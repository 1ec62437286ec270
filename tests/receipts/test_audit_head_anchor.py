"""The audit log's head rides in every anchor batch: the root on chain commits to how long
the edge's log was, each receipt carries the head with its proof, verifiers check it,
and the edge refuses to start from a log shorter than its last anchored head."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from eth_account import Account

from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.anchor.outbox import Outbox, OutboxConfig
from edge_kernel.anchor.rpcserver import serve_chain
from edge_kernel.audit import AuditLog
from edge_kernel.audit_head import HeadFile, check_audit, last_anchored_head
from edge_kernel.db import Database
from jupyter_rapha.protocol.anchor_proof import audit_head_inclusion
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import envelope_digest, sha256_hex, sign_receipt
from jupyter_rapha.verify import verify_document
from tests.receipts.receipt_factory import WEIGHTS, predicate

FAST = OutboxConfig(batch_size=100, batch_interval_seconds=60, retry_initial_seconds=0.05,
                    retry_max_seconds=0.4, poll_seconds=0.02, mine_timeout_seconds=5)


@pytest.fixture
def anchored(tmp_path):
    """Five receipts anchored by an outbox that commits to a log of 7 entries."""
    account = Account.create()
    chain = EmbeddedChain(tmp_path / "chain", account, allow_writes=True)
    db = Database(tmp_path / "edge.sqlite")
    log = AuditLog(db, HeadFile(tmp_path / "audit-head.json"))
    for index in range(7):
        log.append("receipt.sign", job_id=f"{index:032x}")
    edge_key = PrivateKey.generate()
    published: dict[str, dict] = {}
    with serve_chain(chain) as server:
        outbox = Outbox(db, chain, lambda job, digest, anchor: published.setdefault(digest, anchor) and "done",
                        FAST, audit_head=log.head)
        docs = [sign_receipt(predicate(f"{i:032x}", chain.address, chain.chain_id), sha256_hex(WEIGHTS), edge_key)
                for i in range(5)]
        for document in docs:
            outbox.enqueue("j" * 32, envelope_digest(document["envelope"]))
        outbox.flush()
        assert outbox.step()
        for document in docs:
            document["anchor"] = published[envelope_digest(document["envelope"])]
        yield {"docs": docs, "key": edge_key, "url": server.url, "log": log, "db": db, "tmp": tmp_path}
    db.close()


def test_every_receipt_carries_the_anchored_audit_head_and_verifies(anchored):
    head = anchored["log"].head()
    for document in anchored["docs"]:
        block = document["anchor"]["batch"]["audit_head"]
        assert (block["entries"], block["head"]) == (7, head.head)
        assert block["index"] == document["anchor"]["batch"]["size"] - 1 == 5
        assert audit_head_inclusion(document["anchor"]) == (7, head.head)
        report = verify_document(document, anchored["key"].public, rpc_url=anchored["url"])
        assert report.passed, [(c.name, c.status, c.detail) for c in report.checks]
        [check] = [c for c in report.checks if c.name == "audit head"]
        assert check.status == "pass" and "7 entries" in check.detail


def test_rapha_verify_shows_the_audit_head(anchored):
    document = anchored["docs"][3]
    path = anchored["tmp"] / "receipt.json"
    path.write_text(json.dumps(document))
    result = subprocess.run([sys.executable, "-m", "jupyter_rapha.cli", "verify", str(path), "--edge-key",
                             anchored["key"].public.to_text(), "--rpc", anchored["url"],
                             "--skip-weights", "--skip-metrics"],  # a receipt made for this test, no outputs
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "audit head" in result.stdout and "7 entries" in result.stdout, result.stdout


@pytest.mark.parametrize("tamper", [
    lambda block: block.__setitem__("entries", 6),
    lambda block: block.__setitem__("head", "00" * 32),
    lambda block: block["proof"].pop(),
    lambda block: block.__setitem__("index", 0),
    lambda block: block.__setitem__("entries", True),
    lambda block: block.__setitem__("entries", -1),
])
def test_a_changed_audit_head_fails_its_check(anchored, tamper):
    document = copy.deepcopy(anchored["docs"][1])
    tamper(document["anchor"]["batch"]["audit_head"])
    report = verify_document(document, anchored["key"].public, rpc_url=anchored["url"])
    failed = [c.name for c in report.checks if c.status == "fail"]
    assert not report.passed and failed == ["audit head"], report.checks


def test_a_log_shorter_than_its_anchored_head_is_refused_even_with_a_matching_head_file(anchored):
    """A tamperer who truncates the log and rewrites the head file to match is still
    caught by the head the anchor batch committed to."""
    db, log = anchored["db"], anchored["log"]
    assert last_anchored_head(db) == (7, log.head().head)
    with db.transaction() as conn:
        conn.execute("DELETE FROM audit WHERE seq > 4")
    log.head_file.write(log.head())
    status = check_audit(log, log.head_file, last_anchored_head(db))
    assert status.state == "truncated" and "the last anchored batch" in status.message, status.message
