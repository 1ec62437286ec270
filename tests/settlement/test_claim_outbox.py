"""Escrow claims through the anchor outbox: a released job's claim follows its anchor, is
stored signed before it is sent, and survives the edge dying at each point between the
anchor and the claim, with one claim on chain and no second transaction.

"Dying" is an exception no one catches (``Killed``, a BaseException) thrown at that
point; the edge's objects are then dropped and new ones opened on the same database and
chain journal, as a restarted edge does."""

from __future__ import annotations

import hashlib

import pytest
from eth_account import Account

from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.anchor.escrow import Escrow, EscrowClaimer
from edge_kernel.anchor.outbox import Outbox, OutboxConfig
from edge_kernel.db import Database

PRICE = 10**16
BUDGET = 100
FAST = OutboxConfig(batch_size=100, batch_interval_seconds=60, retry_initial_seconds=0.05,
                    retry_max_seconds=0.4, poll_seconds=0.02, mine_timeout_seconds=5)


class Killed(BaseException):
    pass


class Edge:
    """The parts of an edge that anchor and claim, opened on ``root`` (again after a kill)."""

    def __init__(self, root, edge_account, escrow_address=None):
        self.chain = EmbeddedChain(root / "chain", edge_account)
        self.escrow = (Escrow(self.chain, escrow_address) if escrow_address
                       else Escrow.deploy(self.chain, edge_account))
        self.claimer = EscrowClaimer(self.escrow, edge_account)
        self.outbox = Outbox(Database(root / "edge.sqlite"), self.chain, lambda *a: "done", FAST,
                             claimer=self.claimer)

    def restart(self, root, edge_account):
        return Edge(root, edge_account, self.escrow.address)

    def run(self, rounds=6):
        self.outbox.flush()
        for _ in range(rounds):
            self.outbox.step()


@pytest.fixture
def edge_account():
    return Account.create()


@pytest.fixture
def researcher():
    return Account.create()


@pytest.fixture
def edge(tmp_path, edge_account, researcher):
    edge = Edge(tmp_path, edge_account)
    edge.chain.fund(researcher.address, 10**19)
    return edge


def release(edge, researcher, job_id, records, lock=True):
    """What the edge does at a job's release: queue the anchor and the claim."""
    envelope = hashlib.sha256(job_id.encode()).hexdigest()
    if lock:
        now = int(edge.chain.tester.get_block_by_number("latest")["timestamp"])
        edge.escrow.lock(researcher, job_id, PRICE, BUDGET, now + 86_400)
    edge.outbox.enqueue(job_id, envelope)
    edge.outbox.enqueue_claim(job_id, envelope, records, PRICE)
    return envelope


def test_a_released_job_is_anchored_then_claimed_exactly(edge, researcher, edge_account):
    envelope = release(edge, researcher, "job-1", 37)
    edge.run()
    assert edge.outbox.anchor_of(envelope) is not None
    state = edge.outbox.claim_of("job-1")
    assert state["state"] == "mined"
    claim = state["claim"]
    assert (claim["records"], claim["paid_units"], claim["refunded_units"]) == (37, 37 * PRICE, 63 * PRICE)
    assert claim["contract"] == edge.escrow.address and claim["paid"] == "0.37"
    entry = edge.escrow.lock_of("job-1")
    assert entry["state"] == "claimed" and entry["envelope"] == envelope
    assert edge.escrow.credit(edge_account.address) == 37 * PRICE


def test_a_claim_waits_for_its_anchor(edge, researcher):
    edge.escrow.lock(researcher, "early", PRICE, BUDGET,
                     int(edge.chain.tester.get_block_by_number("latest")["timestamp"]) + 86_400)
    edge.outbox.enqueue_claim("early", "11" * 32, 3, PRICE)  # no anchor queued for it
    edge.run(2)
    assert edge.outbox.claim_of("early")["state"] == "queued"
    assert edge.escrow.lock_of("early")["state"] == "locked"


def nonce(edge) -> int:
    return edge.chain.confirmed_nonce()


def test_killed_between_the_anchor_and_the_claim(tmp_path, edge, researcher, edge_account, monkeypatch):
    envelope = release(edge, researcher, "job-1", 12)

    def die(*args):
        raise Killed()

    monkeypatch.setattr(edge.claimer, "sign_claim", die)
    with pytest.raises(Killed):
        edge.run()
    assert edge.outbox.anchor_of(envelope) is not None and edge.outbox.claim_of("job-1")["state"] == "queued"
    again = edge.restart(tmp_path, edge_account)
    again.run()
    assert again.outbox.claim_of("job-1")["state"] == "mined"
    assert again.escrow.credit(edge_account.address) == 12 * PRICE


def test_killed_after_the_claim_was_stored_before_it_was_sent(tmp_path, edge, researcher, edge_account,
                                                              monkeypatch):
    release(edge, researcher, "job-1", 12)
    real = edge.chain.broadcast

    def die_on_the_claim(raw):
        if edge.outbox.claim_of("job-1")["state"] == "signed":
            raise Killed()
        real(raw)

    monkeypatch.setattr(edge.chain, "broadcast", die_on_the_claim)
    with pytest.raises(Killed):
        edge.run()
    stored = edge.outbox.db.query("SELECT tx_hash, nonce FROM escrow_claims")[0]
    before = nonce(edge)
    assert before == stored["nonce"]  # signed, stored, never sent
    again = edge.restart(tmp_path, edge_account)
    later = hashlib.sha256(b"a receipt released after the restart").hexdigest()
    again.outbox.enqueue("job-2", later)  # its batch must not take the stored claim's nonce
    again.run()
    state = again.outbox.claim_of("job-1")
    assert state["state"] == "mined" and state["claim"]["tx_hash"] == stored["tx_hash"]  # the stored bytes
    assert again.outbox.anchor_of(later) is not None
    assert nonce(again) == before + 2  # the claim, then the new batch: nothing signed twice
    assert again.escrow.credit(edge_account.address) == 12 * PRICE


def test_killed_after_the_claim_was_mined_before_it_was_recorded(tmp_path, edge, researcher, edge_account,
                                                                 monkeypatch):
    release(edge, researcher, "job-1", 12)

    def die(tx_hash):
        raise Killed()

    monkeypatch.setattr(edge.outbox, "_wait_claim_mined", die)
    with pytest.raises(Killed):
        edge.run()
    assert edge.outbox.claim_of("job-1")["state"] == "signed"
    assert edge.escrow.lock_of("job-1")["state"] == "claimed"  # on chain already
    before = nonce(edge)
    again = edge.restart(tmp_path, edge_account)
    again.run()
    assert again.outbox.claim_of("job-1")["state"] == "mined"
    assert nonce(again) == before  # recorded from the chain, nothing sent again
    assert again.escrow.credit(edge_account.address) == 12 * PRICE


def test_a_job_is_claimed_once_however_often_it_is_queued(edge, researcher, edge_account):
    envelope = release(edge, researcher, "job-1", 5)
    edge.outbox.enqueue_claim("job-1", envelope, 99, PRICE)  # ignored: the job is queued already
    edge.run()
    assert edge.outbox.claim_of("job-1")["claim"]["records"] == 5
    assert edge.escrow.credit(edge_account.address) == 5 * PRICE


def test_a_claim_the_contract_refuses_is_recorded_and_not_retried(edge, researcher, edge_account):
    release(edge, researcher, "unlocked", 5, lock=False)
    release(edge, researcher, "over", BUDGET + 1)
    edge.run()
    assert edge.outbox.claim_of("unlocked") == {"state": "refused", "detail": "escrow refused: job is not locked"}
    assert edge.outbox.claim_of("over")["detail"] == "escrow refused: records exceed the budget"
    assert edge.escrow.lock_of("over")["state"] == "locked"
    assert edge.escrow.credit(edge_account.address) == 0
