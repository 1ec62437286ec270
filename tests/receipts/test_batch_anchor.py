"""Batched anchoring through the durable outbox: one transaction per Merkle root, each
receipt verifying with its own inclusion proof against a chain read over HTTP; and the
outbox's crash points, none of which may publish a root twice."""

from __future__ import annotations

import copy

import pytest
from eth_account import Account

from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.anchor.evm import RpcAnchor
from edge_kernel.anchor.outbox import Outbox, OutboxConfig
from edge_kernel.anchor.rpcserver import serve_chain
from edge_kernel.db import Database
from jupyter_rapha.protocol.errors import AnchorFault
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import envelope_digest, sha256_hex, sign_receipt
from jupyter_rapha.verify import verify_document
from tests.receipts.receipt_factory import WEIGHTS, predicate

FAST = OutboxConfig(batch_size=100, batch_interval_seconds=60, retry_initial_seconds=0.05,
                    retry_max_seconds=0.4, poll_seconds=0.02, mine_timeout_seconds=5)


class Published:
    """The outbox's publisher, recording what it was handed (the edge's real one writes
    receipt.json; see test_outbox_recovery)."""

    def __init__(self) -> None:
        self.anchors: dict[str, dict] = {}

    def __call__(self, job_id: str, digest: str, anchor: dict) -> str:
        self.anchors[digest] = anchor
        return "done"


@pytest.fixture
def world(tmp_path):
    account = Account.create()
    chain = EmbeddedChain(tmp_path / "chain", account, allow_writes=True)
    with serve_chain(chain) as server:
        yield {"chain": chain, "url": server.url, "account": account, "edge_key": PrivateKey.generate(),
               "db": Database(tmp_path / "edge.sqlite"), "tmp": tmp_path}


def receipts(world, count):
    chain = world["chain"]
    docs = [sign_receipt(predicate(f"{i:032x}", chain.address, chain.chain_id), sha256_hex(WEIGHTS), world["edge_key"])
            for i in range(count)]
    return {envelope_digest(d["envelope"]): d for d in docs}


def anchor_count(chain) -> int:
    """Transactions ever sent by the edge account: its nonce on the chain."""
    return chain.confirmed_nonce()


def test_100_receipts_one_transaction_each_verifies_with_its_proof(world):
    docs = receipts(world, 100)
    published = Published()
    outbox = Outbox(world["db"], RpcAnchor(world["url"], world["account"]), published, FAST)
    for digest in docs:
        outbox.enqueue("j" * 32, digest)
    outbox.flush()
    assert outbox.step()
    assert anchor_count(world["chain"]) == 1
    assert len({a["tx_hash"] for a in published.anchors.values()}) == 1
    assert sorted(a["batch"]["index"] for a in published.anchors.values()) == list(range(100))
    for digest, document in docs.items():
        document["anchor"] = published.anchors[digest]
        report = verify_document(document, world["edge_key"].public, rpc_url=world["url"])
        assert report.passed, [(c.name, c.status, c.detail) for c in report.checks]
        assert [c.name for c in report.checks][-2:] == ["inclusion", "anchor"]
    assert outbox.counts() == {"waiting": 0, "unpublished": 0, "batches": 1}
    assert not outbox.step()  # nothing left: no second transaction
    assert anchor_count(world["chain"]) == 1


@pytest.fixture
def anchored(world):
    docs = receipts(world, 5)
    published = Published()
    outbox = Outbox(world["db"], world["chain"], published, FAST)
    for digest in docs:
        outbox.enqueue("j" * 32, digest)
    outbox.flush()
    outbox.step()
    for digest, document in docs.items():
        document["anchor"] = published.anchors[digest]
    return list(docs.values())


def failing(report):
    return [(c.name, c.detail) for c in report.checks if c.status == "fail"]


@pytest.mark.parametrize("tamper, check", [
    (lambda a: a["batch"]["proof"].__setitem__(0, "00" * 32), "inclusion"),
    (lambda a: a["batch"].__setitem__("index", (a["batch"]["index"] + 1) % 5), "inclusion"),
    (lambda a: a["batch"].__setitem__("size", 4), "inclusion"),
    (lambda a: a["batch"].__setitem__("size", True), "inclusion"),
    (lambda a: a["batch"].__setitem__("index", -1), "inclusion"),
    (lambda a: a["batch"].__setitem__("root", "11" * 32), "inclusion"),
    (lambda a: a["batch"]["proof"].pop(), "inclusion"),
    (lambda a: a["batch"].__setitem__("proof", "nope"), "inclusion"),
    (lambda a: a.__setitem__("batch", None), "inclusion"),
    (lambda a: a.__setitem__("method", "evm-magic"), "inclusion"),
    (lambda a: a.__setitem__("block_number", a["block_number"] - 1), "anchor"),
    (lambda a: a.__setitem__("chain_id", 137), "anchor"),
])
def test_tampered_batch_anchor_fails_naming_the_check(world, anchored, tamper, check):
    document = copy.deepcopy(anchored[2])
    tamper(document["anchor"])
    report = verify_document(document, world["edge_key"].public, rpc_url=world["url"])
    assert not report.passed and failing(report)[0][0] == check, report.checks


def test_another_receipts_proof_does_not_fit(world, anchored):
    document = copy.deepcopy(anchored[0])
    document["anchor"] = dict(anchored[1]["anchor"], envelope_sha256=anchored[0]["anchor"]["envelope_sha256"])
    report = verify_document(document, world["edge_key"].public, rpc_url=world["url"])
    assert failing(report)[0][0] == "inclusion"


def test_root_published_by_another_account_is_refused(world, anchored):
    # Anyone can send a transaction carrying the root; only the edge's address counts.
    chain, key = world["chain"], world["edge_key"]
    intruder = Account.create()
    tx = {"to": intruder.address, "value": 0, "gas": 30000, "chainId": chain.chain_id, "nonce": 0,
          "data": bytes.fromhex(anchored[0]["anchor"]["batch"]["root"]), "maxFeePerGas": 10**10,
          "maxPriorityFeePerGas": 10**9}
    chain.tester.send_transaction({"from": chain.tester.get_accounts()[0], "to": intruder.address,
                                   "value": 10**18, "gas": 21000})
    tx_hash, block = chain.submit_raw(bytes(intruder.sign_transaction(tx).raw_transaction))
    document = copy.deepcopy(anchored[0])
    document["anchor"].update(tx_hash=tx_hash, block_number=block)
    report = verify_document(document, key.public, rpc_url=world["url"])
    assert failing(report) == [("anchor", "anchor transaction was not sent by the edge's anchor address")]


def test_offline_checks_signature_and_inclusion_only(world, anchored):
    report = verify_document(anchored[3], world["edge_key"].public, offline=True)
    assert report.passed
    assert {c.name: c.status for c in report.checks}["inclusion"] == "pass"
    assert {c.name: c.status for c in report.checks}["anchor"] == "skipped"


def test_confirmation_depth_is_enforced(world, anchored):
    from jupyter_rapha.chain import observe_anchor
    from jupyter_rapha.protocol.receipt import verify_receipt

    observation = observe_anchor(world["url"], anchored[0]["anchor"]["tx_hash"])
    deep = verify_receipt(anchored[0], world["edge_key"].public, anchor=observation, min_confirmations=3)
    assert [c.detail for c in deep.checks if c.status == "fail"] == ["1 confirmations, 3 required"]


# -- crash points ---------------------------------------------------------------------

class Crash(BaseException):
    """Stands for the process dying at this point (not an AnchorFault: nothing handles it)."""


class CrashingAnchor:
    """The real chain, dying once at a chosen step."""

    def __init__(self, chain, crash_at: str) -> None:
        self.chain, self.crash_at = chain, crash_at
        self.chain_id, self.address = chain.chain_id, chain.address

    def __getattr__(self, name):
        method = getattr(self.chain, name)

        def call(*args):
            if name == self.crash_at == "broadcast":
                self.crash_at = ""
                raise Crash()  # signed and stored, never sent
            result = method(*args)
            if name == self.crash_at == "mined_block" and result is not None:
                self.crash_at = ""
                raise Crash()  # sent and mined, but the batch was never closed
            return result
        return call


@pytest.mark.parametrize("crash_at", ["broadcast", "mined_block"])
def test_crash_mid_batch_then_restart_anchors_once(world, crash_at):
    docs = receipts(world, 7)
    first = Outbox(world["db"], CrashingAnchor(world["chain"], crash_at), Published(), FAST)
    for digest in docs:
        first.enqueue("j" * 32, digest)
    first.flush()
    with pytest.raises(Crash):
        first.step()
    assert anchor_count(world["chain"]) == (0 if crash_at == "broadcast" else 1)
    published = Published()
    restarted = Outbox(world["db"], world["chain"], published, FAST)
    assert restarted.step()
    assert anchor_count(world["chain"]) == 1
    assert set(published.anchors) == set(docs)
    for digest, document in docs.items():
        document["anchor"] = published.anchors[digest]
        assert verify_document(document, world["edge_key"].public, rpc_url=world["url"]).passed


def test_nonce_taken_by_another_transaction_signs_the_batch_again(world):
    docs = receipts(world, 3)
    first = Outbox(world["db"], CrashingAnchor(world["chain"], "broadcast"), Published(), FAST)
    for digest in docs:
        first.enqueue("j" * 32, digest)
    first.flush()
    with pytest.raises(Crash):
        first.step()
    world["chain"].anchor(b"\x07" * 32)  # someone else with the key uses the stored nonce
    published = Published()
    Outbox(world["db"], world["chain"], published, FAST).step()
    assert anchor_count(world["chain"]) == 2 and set(published.anchors) == set(docs)
    document = docs[next(iter(docs))]
    document["anchor"] = published.anchors[envelope_digest(document["envelope"])]
    assert verify_document(document, world["edge_key"].public, rpc_url=world["url"]).passed


def test_chain_down_stores_nothing_backs_off_and_release_wait_ends(world, tmp_path):
    anchor = RpcAnchor("http://127.0.0.1:9/chain", world["account"], chain_id=world["chain"].chain_id, timeout=2)
    outbox = Outbox(world["db"], anchor, Published(), OutboxConfig(batch_interval_seconds=0.01, retry_initial_seconds=0.05,
                                                                   retry_max_seconds=0.2, poll_seconds=0.02))
    outbox.start()
    try:
        outbox.enqueue("j" * 32, "ab" * 32)
        assert outbox.wait_anchored("ab" * 32, timeout=10) is None
    finally:
        outbox.stop()
    assert outbox.counts() == {"waiting": 1, "unpublished": 0, "batches": 0}
    delays = [outbox._failed("test") for _ in range(6)]
    assert delays == sorted(delays) and delays[-1] == 0.2


def test_enqueue_is_idempotent(world):
    outbox = Outbox(world["db"], world["chain"], Published(), FAST)
    outbox.enqueue("j" * 32, "cd" * 32)
    outbox.enqueue("j" * 32, "cd" * 32)
    assert outbox.counts()["waiting"] == 1
    with pytest.raises(AnchorFault):
        Outbox(world["db"], world["chain"], Published(), FAST)._close(
            {"batch_id": 99, "root": "00" * 32, "tx_hash": "0x" + "00" * 32}, 1)
