"""Settlement in a job's life, on the embedded chain: the researcher's lock through the
edge's public /chain (which takes escrow operations only), the gate before a job runs,
the claim at release into the receipt, the refund of a job that ended without release."""

from __future__ import annotations

import hashlib
import json
import time
from types import SimpleNamespace

import pytest
from eth_account import Account

from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.anchor.escrow import EscrowClaimer, open_escrow, researcher_selectors
from edge_kernel.anchor.outbox import Outbox, OutboxConfig
from edge_kernel.anchor.rpcserver import ChainServer
from edge_kernel.db import Database
from edge_kernel.settlement import NO_LOCK, Settlement
from jupyter_rapha.escrow_client import EscrowRpc, lock_for_job
from jupyter_rapha.protocol.errors import AnchorFault, BadInput

PRICE = "0.01"
UNITS = 10**16
FAST = OutboxConfig(batch_size=100, batch_interval_seconds=60, retry_initial_seconds=0.05,
                    retry_max_seconds=0.4, poll_seconds=0.02, mine_timeout_seconds=5)


class Datasets:
    def get(self, name):
        return SimpleNamespace(name=name, price_per_record=PRICE if name == "priced" else "0")


@pytest.fixture
def world(tmp_path):
    edge_account, researcher = Account.create(), Account.create()
    chain = EmbeddedChain(tmp_path / "chain", edge_account)
    escrow = open_escrow(chain, edge_account, tmp_path / "chain")
    chain.serve_escrow(escrow.address, researcher_selectors())
    published = []
    outbox = Outbox(Database(tmp_path / "edge.sqlite"), chain, lambda *a: "done", FAST,
                    claimer=EscrowClaimer(escrow, edge_account),
                    publish_claim=lambda *a: published.append(a) or "done")
    settlement = Settlement(escrow, outbox, Datasets(), 18)
    chain.fund(researcher.address, 10**19)
    with ChainServer(chain) as server:
        yield SimpleNamespace(chain=chain, escrow=escrow, outbox=outbox, settlement=settlement, url=server.url,
                              researcher=researcher, edge_account=edge_account, published=published,
                              info={"chain": {"rpc": server.url}, "settlement": settlement.info()})


def spec(job_id, budget=50, seconds=600, dataset="priced"):
    return SimpleNamespace(job_id=job_id, dataset=dataset,
                           budget=SimpleNamespace(max_records=budget, max_seconds=seconds))


def who(address):
    return SimpleNamespace(chain_address=address)


def lock(world, job_id, budget=50, account=None):
    return lock_for_job("http://unused", world.info, {"name": "priced", "price_per_record": PRICE},
                        account or world.researcher, job_id, budget, 600)


def test_the_lock_goes_through_the_public_chain_endpoint_and_lets_the_job_run(world):
    made = lock(world, "a" * 32)
    assert made.amount_units == 50 * UNITS and made.tx_hash
    assert made.line().startswith(f"escrow: locked 0.5 for job {'a' * 12} (0.01 per record x 50) in 0x")
    assert "; your account now holds 9.49" in made.line()  # 10 less the lock and its gas
    assert world.settlement.refusal(spec("a" * 32), who(world.researcher.address), Datasets().get("priced")) is None
    again = lock(world, "a" * 32)  # the same spec submitted again: nothing more is locked
    assert again.tx_hash == "" and world.escrow.credit(world.researcher.address) == 0


def test_a_free_dataset_needs_no_lock(world):
    assert world.settlement.refusal(spec("b" * 32, dataset="free"), who(""), Datasets().get("free")) is None
    assert lock_for_job("http://unused", world.info, {"name": "free", "price_per_record": "0"}, None,
                        "b" * 32, 5, 60) is None


@pytest.mark.parametrize("case", ["none", "unregistered", "other", "small", "short"])
def test_the_gate_refuses_a_job_without_a_fitting_lock(world, case):
    job, mine = "c" * 32, world.researcher.address
    if case == "other":
        other = Account.create()
        world.chain.fund(other.address, 10**18)
        lock(world, job, account=other)
    elif case == "small":
        lock(world, job, budget=10)
    elif case == "short":
        escrow = EscrowRpc(world.url, world.escrow.address)
        escrow.lock(world.researcher, job, UNITS, 50, int(time.time()) + 3600, 18)
    elif case == "unregistered":
        lock(world, job)
        mine = ""
    reason = world.settlement.refusal(spec(job), who(mine), Datasets().get("priced"))
    assert reason is not None and reason.startswith(NO_LOCK + ": ")
    expected = {"none": "holds none for job", "unregistered": "no chain account is registered",
                "other": "not your registered account", "small": "covers 10 records, the job's budget is 50",
                "short": "expires too soon"}[case]
    assert expected in reason


def test_a_chain_that_cannot_be_read_refuses_the_job(world, monkeypatch):
    monkeypatch.setattr(world.escrow, "lock_of", lambda job: 1 / 0)
    reason = world.settlement.refusal(spec("d" * 32), who(world.researcher.address), Datasets().get("priced"))
    assert reason == f"{NO_LOCK}: the edge could not read its escrow contract"


def test_a_deposit_too_small_for_the_budget_is_refused_before_anything_is_sent(world):
    poor = Account.create()
    world.chain.fund(poor.address, 3 * 10**17)
    before = world.chain.head_block()
    with pytest.raises(BadInput) as refused:
        lock(world, "e" * 32, budget=50, account=poor)
    assert "deposit too small for the budget" in refused.value.message
    assert "needs 0.5" in refused.value.message and "holds 0.3," in refused.value.message
    assert "missing" in refused.value.message
    assert world.chain.head_block() == before


def test_the_public_endpoint_takes_no_other_transaction(world):
    tx = {"to": world.edge_account.address, "value": 1, "gas": 21000, "chainId": world.chain.chain_id, "nonce": 0,
          "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9, "data": b""}
    raw = "0x" + bytes(world.researcher.sign_transaction(tx).raw_transaction).hex()
    answer = world.chain.rpc({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]})
    assert "escrow lock, cancel and withdraw" in answer["error"]["message"]
    call = world.chain.rpc({"jsonrpc": "2.0", "id": 2, "method": "eth_call",
                            "params": [{"to": world.edge_account.address, "data": "0x"}]})
    assert "escrow contract only" in call["error"]["message"]


def run(outbox, rounds=6):
    outbox.flush()
    for _ in range(rounds):
        outbox.step()


def test_a_released_job_claims_its_records_and_the_claim_reaches_the_receipt(world):
    job = "f" * 32
    lock(world, job)
    envelope = hashlib.sha256(b"receipt").hexdigest()
    world.outbox.enqueue(job, envelope)
    assert world.settlement.claim(job, envelope, 37, Datasets().get("priced"))
    run(world.outbox)
    claim = world.settlement.wait_claimed(job, 1)
    assert (claim["records"], claim["paid_units"], claim["refunded_units"]) == (37, 37 * UNITS, 13 * UNITS)
    assert claim["contract"] == world.escrow.address and claim["tx_hash"].startswith("0x")
    assert world.published == [(job, envelope, claim)]
    assert world.escrow.credit(world.researcher.address) == 13 * UNITS


def test_a_job_that_ended_without_release_is_refunded_in_full(world):
    job = "0" * 31 + "1"
    lock(world, job)
    world.settlement.refund(job, Datasets().get("priced"))
    run(world.outbox)
    assert world.outbox.claim_of(job)["state"] == "mined"
    assert world.escrow.lock_of(job)["state"] == "claimed"
    assert world.escrow.credit(world.researcher.address) == 50 * UNITS
    assert world.published == []  # a refund names no receipt
    world.settlement.refund("2" * 32, Datasets().get("priced"))  # no lock: nothing queued
    assert world.outbox.claim_of("2" * 32)["state"] == "none"


def test_the_recorded_contract_is_reopened_after_a_restart(world, tmp_path):
    with pytest.raises(AnchorFault, match="pays another edge account"):
        open_escrow(world.chain, Account.create(), tmp_path / "chain")
    with pytest.raises(AnchorFault, match="cannot be read on the chain"):  # a chain that lost the contract
        open_escrow(EmbeddedChain(tmp_path / "other", world.edge_account), world.edge_account, tmp_path / "chain")
    assert open_escrow(world.chain, world.edge_account, tmp_path / "chain").address == world.escrow.address


def test_the_settlement_statement_lists_claims_and_refunds_with_totals(world):
    from edge_kernel.settlement_report import claim_rows, parse_since, render

    paid, refunded = "3" * 32, "4" * 32
    lock(world, paid)
    lock(world, refunded)
    world.outbox.enqueue(paid, "ab" * 32)
    world.settlement.claim(paid, "ab" * 32, 37, Datasets().get("priced"))
    world.settlement.refund(refunded, Datasets().get("priced"))
    run(world.outbox)
    rows = claim_rows(world.outbox.db, {}, 0)
    assert [(r["job_id"], r["state"], r["records"], r["paid"], r["refunded"]) for r in rows] == [
        (paid, "mined", 37, "0.37", "0.13"), (refunded, "mined", 0, "0", "0.5")]
    document = json.loads(render(rows, "json"))
    assert document["totals"][0]["paid"] == "0.37" and document["totals"][0]["refunded"] == "0.63"
    csv_text = render(rows, "csv").splitlines()
    assert csv_text[0].startswith("queued,job_id,researcher,dataset,state,records") and len(csv_text) == 3
    assert claim_rows(world.outbox.db, {}, parse_since("2999-01-01")) == []
    with pytest.raises(BadInput, match="is not a date"):
        parse_since("yesterday")


def test_settlement_is_refused_on_a_chain_the_escrow_cannot_drive(tmp_path):
    from edge_kernel.cli import edge_toml
    from edge_kernel.settings import load_settings

    (tmp_path / "edge.toml").write_text(edge_toml("e", demo=True, port=8470, settlement=True).replace(
        'backend = "embedded"\nrpc_url = ""', 'backend = "rpc"\nrpc_url = "http://127.0.0.1:1"'))
    with pytest.raises(BadInput, match="chain.settlement in edge.toml needs chain.backend"):
        load_settings(tmp_path)
    (tmp_path / "edge.toml").write_text(edge_toml("e", demo=True, port=8470, settlement=True))
    assert load_settings(tmp_path).chain.settlement is True


def test_a_chain_address_is_checked_when_it_is_registered(tmp_path):
    from edge_kernel.researchers import Researcher, ResearcherRegistry
    from jupyter_rapha.protocol.keys import PrivateKey

    registry = ResearcherRegistry(tmp_path)
    key = PrivateKey.generate().public.to_text()
    address = "0x52908400098527886E0F7030069857D2E4169EE7"  # EIP-55's own example
    typo = address.replace("E0F", "e0F")  # one letter's case changed: its checksum fails
    for bad in (typo, "0x1234", "52908400098527886E0F7030069857D2E4169EE7"):
        with pytest.raises(BadInput, match="is not a 20-byte 0x address"):
            registry.add(Researcher("alice", key, chain_address=bad))
    registry.add(Researcher("alice", key, chain_address=address.lower()))
    assert registry.by_name("alice").chain_address == address  # stored checksummed
