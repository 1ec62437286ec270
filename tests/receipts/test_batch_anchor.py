"""Batched anchoring through the durable outbox: one transaction per Merkle root, each
receipt verifying with its own inclusion proof against a chain read over HTTP; and the
outbox's crash points, none of which may publish a root twice."""

from __future__ import annotations

import copy
import json
import time

import pytest
from eth_account import Account
from eth_utils import keccak

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
    config = OutboxConfig(batch_interval_seconds=0.01, retry_initial_seconds=0.05, retry_max_seconds=0.2,
                          poll_seconds=0.02)
    outbox = Outbox(world["db"], anchor, Published(), config)
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


class CongestedNode:
    """A JSON-RPC node in front of the real chain whose mempool holds, unmined, any
    transaction offering less than ``rise`` times the first one's maximum fee (the market
    moved just after it was signed); everything else goes to the chain."""

    def __init__(self, upstream: str, rise: float) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import requests
        import rlp

        self.rise, self.floor, self.held, self.forwarded = rise, None, [], []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if request.get("method") == "eth_sendRawTransaction":
                    raw = bytes.fromhex(request["params"][0][2:])
                    fields = rlp.decode(raw[1:])  # EIP-1559: chain, nonce, tip, max fee, ...
                    offer = {"nonce": int.from_bytes(fields[1], "big"), "max_fee": int.from_bytes(fields[3], "big"),
                             "tx_hash": "0x" + keccak(raw).hex(), "raw": request["params"][0]}
                    if node.floor is None:
                        node.floor = int(offer["max_fee"] * node.rise)
                    if offer["max_fee"] < node.floor:
                        node.held.append(offer)
                        return self._answer({"jsonrpc": "2.0", "id": request["id"], "result": offer["tx_hash"]})
                    node.forwarded.append(offer)
                answer = requests.post(upstream, json=request, timeout=30).json()
                self._answer(answer)

            def _answer(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def congested_outbox(world, node: CongestedNode, docs, published: Published) -> Outbox:
    """A started outbox anchoring ``docs`` through ``node``, bumping after 0.2 s."""
    anchor = RpcAnchor(node.url, world["account"], chain_id=world["chain"].chain_id, timeout=5)
    outbox = Outbox(world["db"], anchor, published,
                    OutboxConfig(batch_interval_seconds=0.01, retry_initial_seconds=0.05, retry_max_seconds=0.1,
                                 poll_seconds=0.02, mine_timeout_seconds=0.3, bump_after_seconds=0.2))
    for digest in docs:
        outbox.enqueue("j" * 32, digest)
    outbox.start()
    return outbox


def wait_until(condition, what: str, deadline: float) -> None:
    # rounds fail while the node holds the transaction: poll rather than wait_anchored
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_an_underpriced_anchor_is_replaced_with_higher_fees_at_its_nonce(world):
    chain, docs = world["chain"], receipts(world, 3)
    node, published = CongestedNode(world["url"], rise=1.2), Published()  # one bump (12.5%) is not enough, two are
    try:
        outbox = congested_outbox(world, node, docs, published)
        try:
            wait_until(lambda: all(outbox.anchor_of(d) for d in docs), "never anchored", time.monotonic() + 60)
        finally:
            outbox.stop()
    finally:
        node.close()
    # Two underpriced versions held, then one at >= 126% of the market's fee mined, all at
    # one nonce: the root is on chain once, by the one transaction the receipts name.
    assert len(node.held) == 2 and len(node.forwarded) == 1
    [mined] = node.forwarded
    assert {offer["nonce"] for offer in node.held} == {mined["nonce"]} and mined["max_fee"] >= node.floor
    assert [h["max_fee"] for h in node.held] == sorted(h["max_fee"] for h in node.held)
    assert anchor_count(chain) == 1
    for digest, document in docs.items():
        document["anchor"] = published.anchors[digest]
        assert document["anchor"]["tx_hash"] == mined["tx_hash"]
        assert verify_document(document, world["edge_key"].public, rpc_url=world["url"]).passed


def test_a_replaced_anchor_mined_after_all_is_the_one_the_receipts_name(world):
    import requests

    chain, docs = world["chain"], receipts(world, 2)
    node = CongestedNode(world["url"], rise=100.0)  # holds every version
    try:
        published = Published()
        outbox = congested_outbox(world, node, docs, published)
        try:
            deadline = time.monotonic() + 60
            wait_until(lambda: len(node.held) >= 2, "never replaced", deadline)
            first = node.held[0]  # a miner takes the first, underpriced version after all
            answer = requests.post(world["url"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
                                                       "params": [first["raw"]]}, timeout=30).json()
            assert answer.get("result") == first["tx_hash"], answer
            wait_until(lambda: all(outbox.anchor_of(d) for d in docs), "never anchored", deadline)
        finally:
            outbox.stop()
    finally:
        node.close()
    assert anchor_count(chain) == 1  # no new nonce was signed: the root is on chain once
    for digest, document in docs.items():
        document["anchor"] = published.anchors[digest]
        assert document["anchor"]["tx_hash"] == first["tx_hash"]
        assert verify_document(document, world["edge_key"].public, rpc_url=world["url"]).passed


@pytest.mark.parametrize("stuck,market,expected", [
    ({"maxFeePerGas": 100, "maxPriorityFeePerGas": 8}, {"maxFeePerGas": 90, "maxPriorityFeePerGas": 1},
     {"maxFeePerGas": 113, "maxPriorityFeePerGas": 9}),
    ({"maxFeePerGas": 100, "maxPriorityFeePerGas": 8}, {"maxFeePerGas": 500, "maxPriorityFeePerGas": 30},
     {"maxFeePerGas": 500, "maxPriorityFeePerGas": 30}),
    ({"gasPrice": 80}, {"gasPrice": 70}, {"gasPrice": 90}),
    ({"gasPrice": 80}, {"maxFeePerGas": 200, "maxPriorityFeePerGas": 2}, {"gasPrice": 200}),
])
def test_replacement_fees_rise_at_least_an_eighth_on_every_field(stuck, market, expected):
    from edge_kernel.anchor.base import bumped_fees

    assert bumped_fees(stuck, market) == expected


def test_fees_are_read_back_from_every_kind_of_signed_transaction():
    from edge_kernel.anchor.base import signed_fees

    key = Account.create()
    common = {"to": key.address, "value": 0, "gas": 30_000, "nonce": 3, "data": b"\x01" * 32}
    legacy = key.sign_transaction({**common, "gasPrice": 7}).raw_transaction
    access = key.sign_transaction({**common, "gasPrice": 9, "chainId": 1, "accessList": []}).raw_transaction
    dynamic = key.sign_transaction({**common, "chainId": 1, "maxFeePerGas": 11,
                                    "maxPriorityFeePerGas": 2}).raw_transaction
    assert signed_fees(bytes(legacy)) == {"gasPrice": 7}
    assert signed_fees(bytes(access)) == {"gasPrice": 9}
    assert signed_fees(bytes(dynamic)) == {"maxFeePerGas": 11, "maxPriorityFeePerGas": 2}
    with pytest.raises(AnchorFault):
        signed_fees(b"\x05garbage")
