"""A receipt's settlement claim checked against the chain over JSON-RPC (loopback HTTP to
the embedded chain): the claim that was mined passes; a receipt that says anything else
about it fails, naming what differs."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_utils.crypto import keccak

from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.anchor.escrow import Escrow
from edge_kernel.anchor.rpcserver import serve_chain
from jupyter_rapha.chain import observe_claim
from jupyter_rapha.protocol import escrow_artifact
from jupyter_rapha.protocol.errors import AnchorFault
from jupyter_rapha.protocol.escrow import CLAIMED_TOPIC, claim_matches
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import envelope_digest, sha256_hex, sign_receipt
from jupyter_rapha.verify import verify_document
from tests.receipts.receipt_factory import METRICS, WEIGHTS, predicate

PRICE = 10**16
ENVELOPE = "cd" * 32


@pytest.fixture(scope="module")
def settled(tmp_path_factory):
    edge, researcher = Account.create(), Account.create()
    chain = EmbeddedChain(tmp_path_factory.mktemp("chain"), edge)
    chain.fund(researcher.address, 10**19)
    escrow = Escrow.deploy(chain, edge)
    now = int(chain.tester.get_block_by_number("latest")["timestamp"])
    for job in ("job-a", "job-b"):
        escrow.lock(researcher, job, PRICE, 50, now + 86_400)
    claim = escrow.claim(edge, "job-a", 21, ENVELOPE)
    other = escrow.claim(edge, "job-b", 50, "ee" * 32)
    # a signed receipt (its meter: 40 records) and the claim naming its envelope
    key = PrivateKey.generate()
    document = sign_receipt(predicate(), sha256_hex(WEIGHTS), key)
    job_id = predicate()["job"]["id"]
    escrow.lock(researcher, job_id, PRICE, 50, now + 86_400)
    signed = escrow.claim(edge, job_id, 40, envelope_digest(document["envelope"]))
    RECEIPT.update(key=key, document=dict(document, settlement_claim=escrow.claim_block(signed, PRICE)))
    with serve_chain(chain) as server:
        yield server.url, escrow.claim_block(claim, PRICE), other


RECEIPT: dict = {}


def check(settled, block=None, **overrides):
    url, claim, _ = settled
    block = dict(claim, **(block or {}))
    kwargs = {"job_id": "job-a", "envelope_sha256": ENVELOPE, "metered_records": 21, **overrides}
    return claim_matches(block, obs=observe_claim(url, block["tx_hash"], timeout=5), **kwargs)


def test_the_claimed_topic_is_the_contracts_event():
    event = next(e for e in escrow_artifact.ABI if e.get("type") == "event" and e["name"] == "Claimed")
    signature = f"Claimed({','.join(i['type'] for i in event['inputs'])})"
    assert CLAIMED_TOPIC == "0x" + keccak(text=signature).hex()


def test_the_mined_claim_matches_its_receipt(settled):
    ok, detail = check(settled)
    assert ok, detail
    assert "claimed 21 records (0.21 paid)" in detail
    _, claim, _ = settled
    assert (claim["paid"], claim["refunded"], claim["paid_units"]) == ("0.21", "0.29", 21 * PRICE)


@pytest.mark.parametrize("block,overrides,reason", [
    ({"records": 22, "paid_units": 22 * PRICE, "refunded_units": 28 * PRICE}, {"metered_records": 22},
     "on chain the claim is 21 records"),
    ({"paid_units": 20 * PRICE}, {}, "not records x price"),
    ({"refunded_units": 0}, {}, "the receipt says 21"),
    ({}, {"metered_records": 20}, "the signed meter 20"),
    ({}, {"envelope_sha256": "00" * 32}, "another receipt envelope"),
    ({}, {"job_id": "job-b"}, "no Claimed event for this job"),
    ({"contract": "0x" + "11" * 20}, {}, "not sent to the named escrow contract"),
    ({"chain_id": 137}, {}, "the RPC serves chain"),
])
def test_a_receipt_that_differs_from_the_claim_on_chain_fails(settled, block, overrides, reason):
    ok, detail = check(settled, block, **overrides)
    assert not ok and reason in detail


def test_a_receipt_naming_another_claim_transaction_fails(settled):
    url, claim, other = settled
    ok, detail = check(settled, {"tx_hash": other.tx_hash})
    assert not ok and "no Claimed event for this job" in detail


def test_an_unknown_claim_transaction_is_a_failure_not_a_pass(settled):
    url, claim, _ = settled
    with pytest.raises(AnchorFault, match="not found"):
        observe_claim(url, "0x" + "ab" * 32, timeout=5)
    with pytest.raises(AnchorFault, match="malformed"):
        observe_claim(url, "0x12", timeout=5)


# -- rapha verify's settlement line ---------------------------------------------------------

def settlement_line(settled, document=None, **kwargs):
    url, _, _ = settled
    document = RECEIPT["document"] if document is None else document
    report = verify_document(document, RECEIPT["key"].public, weights=WEIGHTS, metrics=METRICS,
                             **({"rpc_url": url} | kwargs))
    return next(c for c in report.checks if c.name == "settlement"), report


def test_verify_passes_the_claim_on_chain_that_matches_the_receipt(settled):
    line, _ = settlement_line(settled)
    assert line.status == "pass" and "claimed 40 records (0.4 paid)" in line.detail


def test_verify_fails_when_the_claim_on_chain_differs_from_the_receipt(settled):
    url, claim_a, _ = settled
    tampered = dict(RECEIPT["document"])
    tampered["settlement_claim"] = dict(tampered["settlement_claim"], refunded_units=0)
    line, report = settlement_line(settled, tampered)
    assert line.status == "fail" and "the receipt says 40" in line.detail and report.outcome == "failed"
    # another job's claim (a real, mined one) put into this receipt
    tampered["settlement_claim"] = claim_a
    line, _ = settlement_line(settled, tampered)
    assert line.status == "fail" and "the signed meter 40" in line.detail


def test_an_unchecked_claim_is_a_skip_that_only_offline_allows(settled):
    line, report = settlement_line(settled, rpc_url=None)
    assert line.status == "skipped" and "--rpc" in line.detail and line in report.failures()
    line, report = settlement_line(settled, rpc_url=None, offline=True)
    assert line.status == "skipped" and line not in report.failures()
    line, report = settlement_line(settled, rpc_url="http://127.0.0.1:9/chain")
    assert line.status == "fail" and "cannot read the chain" in line.detail
