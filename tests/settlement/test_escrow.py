"""The per-record escrow contract on the embedded EVM (py-evm through EmbeddedChain).

Every test deploys the shipped artefact from the edge's account and drives it with real
signed transactions: lock, claim, cancel, withdraw, and the refusals the contract makes.
"""

from __future__ import annotations

import time

import pytest
from eth_account import Account

from edge_kernel.anchor import devchain
from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.anchor.escrow import Escrow, compile_escrow, shipped_artifact
from jupyter_rapha.protocol import escrow_artifact
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.escrow import job_key

PRICE = 10**16  # 0.01 of the native token per record
BUDGET = 100
ENVELOPE = "ab" * 32
DAY = 86_400


@pytest.fixture
def edge_account():
    return Account.create()


@pytest.fixture
def researcher():
    return Account.create()


@pytest.fixture
def chain(tmp_path, edge_account, researcher):
    chain = EmbeddedChain(tmp_path / "chain", edge_account)
    chain.fund(researcher.address, 10 * 10**18)
    return chain


@pytest.fixture
def escrow(chain, edge_account):
    return Escrow.deploy(chain, edge_account)


def head_time(chain) -> int:
    return int(chain.tester.get_block_by_number("latest")["timestamp"])


def lock(escrow, researcher, job="job-1", price=PRICE, budget=BUDGET, expiry=None):
    expiry = head_time(escrow.chain) + DAY if expiry is None else expiry
    return escrow.lock(researcher, job, price, budget, expiry)


def paid_gas(chain, tx_hash) -> int:
    receipt = chain.tester.get_transaction_receipt(tx_hash)
    return int(receipt["gas_used"]) * int(receipt["effective_gas_price"])


# -- the artefact --------------------------------------------------------------------------

def test_shipped_artifact_is_the_source_compiled_again():
    built = compile_escrow()
    assert built == shipped_artifact()
    assert escrow_artifact.EVM_VERSION == "shanghai" and escrow_artifact.VYPER_VERSION == "0.4.3"


def test_deployed_code_is_the_artifacts_runtime_and_the_deployer_is_the_only_claimant(chain, escrow, edge_account):
    code = chain.tester.get_code(escrow.address)
    code = code if isinstance(code, bytes) else bytes.fromhex(code[2:])
    runtime = bytes.fromhex(escrow_artifact.BYTECODE_RUNTIME[2:])
    assert code[:len(runtime)] == runtime  # the immutable (the edge's address) follows it
    assert code[len(runtime):] .rjust(32, b"\0")[-20:] == bytes.fromhex(edge_account.address[2:])
    assert escrow.edge() == edge_account.address


# -- claim ---------------------------------------------------------------------------------

def test_a_job_that_stopped_early_pays_exactly_its_records_and_refunds_the_rest(chain, escrow, researcher,
                                                                                edge_account):
    before = chain.tester.get_balance(researcher.address)
    lock_tx = lock(escrow, researcher)
    assert chain.tester.get_balance(researcher.address) == before - PRICE * BUDGET - paid_gas(chain, lock_tx)
    claim = escrow.claim(edge_account, "job-1", 37, ENVELOPE)
    assert (claim.records, claim.paid, claim.refunded) == (37, 37 * PRICE, 63 * PRICE)
    assert claim.envelope_sha256 == ENVELOPE
    assert escrow.credit(edge_account.address) == 37 * PRICE
    assert escrow.credit(researcher.address) == 63 * PRICE
    entry = escrow.lock_of("job-1")
    assert entry["state"] == "claimed" and entry["records"] == 37 and entry["envelope"] == ENVELOPE
    assert entry["researcher"] == researcher.address and entry["amount"] == PRICE * BUDGET


def test_a_job_that_used_its_whole_budget_or_nothing_settles_at_the_ends(escrow, researcher, edge_account):
    lock(escrow, researcher, "all")
    lock(escrow, researcher, "none")
    assert escrow.claim(edge_account, "all", BUDGET, ENVELOPE).refunded == 0
    assert escrow.claim(edge_account, "none", 0, ENVELOPE).paid == 0
    assert escrow.credit(edge_account.address) == BUDGET * PRICE
    assert escrow.credit(researcher.address) == BUDGET * PRICE


def test_a_second_claim_is_refused(escrow, researcher, edge_account):
    lock(escrow, researcher)
    escrow.claim(edge_account, "job-1", 10, ENVELOPE)
    with pytest.raises(BadInput, match="job is not locked"):
        escrow.claim(edge_account, "job-1", 10, ENVELOPE)
    assert escrow.credit(edge_account.address) == 10 * PRICE


def test_a_claim_over_the_maximum_is_refused(escrow, researcher, edge_account):
    lock(escrow, researcher)
    with pytest.raises(BadInput, match="records exceed the budget"):
        escrow.claim(edge_account, "job-1", BUDGET + 1, ENVELOPE)
    assert escrow.lock_of("job-1")["state"] == "locked"


def test_a_claim_from_another_address_is_refused(chain, escrow, researcher):
    lock(escrow, researcher)
    for other in (researcher, Account.create()):
        chain.fund(other.address, 10**18)
        with pytest.raises(BadInput, match="only the edge claims"):
            escrow.claim(other, "job-1", 1, ENVELOPE)
    assert escrow.lock_of("job-1")["state"] == "locked"


def test_a_claim_for_a_job_never_locked_is_refused(escrow, edge_account):
    with pytest.raises(BadInput, match="job is not locked"):
        escrow.claim(edge_account, "never", 0, ENVELOPE)


# -- lock ------------------------------------------------------------------------------------

def test_a_lock_must_carry_exactly_price_times_budget_and_is_once_per_job(chain, escrow, researcher):
    data = escrow._data("lock", job_key("j"), PRICE, BUDGET, head_time(chain) + DAY)
    for value in (PRICE * BUDGET - 1, PRICE * BUDGET + 1):
        with pytest.raises(BadInput, match="value is not price times budget"):
            Escrow._send(chain, researcher, escrow.address, data, value=value)
    lock(escrow, researcher, "j")
    with pytest.raises(BadInput, match="job already locked"):
        lock(escrow, researcher, "j")
    with pytest.raises(BadInput, match="expiry is not in the future"):
        lock(escrow, researcher, "past", expiry=head_time(chain))
    with pytest.raises(BadInput, match="price is zero"):
        lock(escrow, researcher, "free", price=0)


# -- cancel after expiry (time travel: the chain takes block times from the clock) ---------

def test_the_researcher_cancels_an_unclaimed_lock_only_after_its_expiry(chain, escrow, researcher, edge_account,
                                                                       monkeypatch):
    lock(escrow, researcher, expiry=head_time(chain) + DAY)
    with pytest.raises(BadInput, match="lock has not expired"):
        escrow.cancel(researcher, "job-1")
    real = time.time
    monkeypatch.setattr(devchain.time, "time", lambda: real() + 2 * DAY)
    stranger = Account.create()
    chain.fund(stranger.address, 10**18)
    with pytest.raises(BadInput, match="only the researcher cancels"):
        escrow.cancel(stranger, "job-1")
    escrow.cancel(researcher, "job-1")
    assert escrow.lock_of("job-1")["state"] == "cancelled"
    assert escrow.credit(researcher.address) == PRICE * BUDGET
    with pytest.raises(BadInput, match="job is not locked"):
        escrow.claim(edge_account, "job-1", 1, ENVELOPE)
    with pytest.raises(BadInput, match="job is not locked"):
        escrow.cancel(researcher, "job-1")


def test_a_claimed_lock_cannot_be_cancelled(chain, escrow, researcher, edge_account, monkeypatch):
    lock(escrow, researcher)
    escrow.claim(edge_account, "job-1", 5, ENVELOPE)
    real = time.time
    monkeypatch.setattr(devchain.time, "time", lambda: real() + 2 * DAY)
    with pytest.raises(BadInput, match="job is not locked"):
        escrow.cancel(researcher, "job-1")
    assert escrow.credit(researcher.address) == 95 * PRICE


# -- withdraw (pull payments) -------------------------------------------------------------

def test_withdraw_pays_out_the_credit_once(chain, escrow, researcher, edge_account):
    lock(escrow, researcher)
    escrow.claim(edge_account, "job-1", 40, ENVELOPE)
    for account, credit in ((researcher, 60 * PRICE), (edge_account, 40 * PRICE)):
        before = chain.tester.get_balance(account.address)
        tx = escrow.withdraw(account)
        assert chain.tester.get_balance(account.address) == before + credit - paid_gas(chain, tx)
        assert escrow.credit(account.address) == 0
        with pytest.raises(BadInput, match="nothing to withdraw"):
            escrow.withdraw(account)
    assert chain.tester.get_balance(escrow.address) == 0


REENTER = """
# pragma version 0.4.3
# pragma evm-version shanghai
interface Escrow:
    def lock(job: bytes32, price: uint256, max_records: uint256, expiry: uint256): payable
    def withdraw(): nonpayable

target: Escrow
reentries: uint256
entered: public(uint256)

@deploy
def __init__(target: address, reentries: uint256):
    self.target = Escrow(target)
    self.reentries = reentries

@external
@payable
def lock(job: bytes32, price: uint256, max_records: uint256, expiry: uint256):
    extcall self.target.lock(job, price, max_records, expiry, value=msg.value)

@external
def withdraw():
    extcall self.target.withdraw()

@external
@payable
def __default__():
    self.entered += 1
    if self.entered <= self.reentries:
        extcall self.target.withdraw()
"""


def deploy_reentrant(chain, escrow, researcher, reentries):
    import vyper
    from web3 import Web3

    out = vyper.compile_code(REENTER, output_formats=["abi", "bytecode"])
    attacker = Web3().eth.contract(abi=out["abi"], bytecode=out["bytecode"])
    deploy = bytes.fromhex(attacker.constructor(escrow.address, reentries).data_in_transaction[2:])
    tx_hash, _ = Escrow._send(chain, researcher, None, deploy)
    contract = Escrow(chain, chain.tester.get_transaction_receipt(tx_hash)["contract_address"])
    contract._contract = attacker  # the same plumbing, encoding against the attacker's ABI
    return contract


@pytest.mark.parametrize("reentries", [0, 1])
def test_withdraw_cannot_be_reentered(chain, escrow, researcher, edge_account, reentries):
    """A researcher that is a contract calling withdraw again from its receive hook gets
    nothing twice: the inner call is refused and the whole withdrawal undone. The same
    contract not re-entering (0) withdraws its credit, so the guard is what refuses."""
    evil = deploy_reentrant(chain, escrow, researcher, reentries)
    job = f"evil-{reentries}"
    Escrow._send(chain, researcher, evil.address,
                 evil._data("lock", job_key(job), PRICE, BUDGET, head_time(chain) + DAY), value=PRICE * BUDGET)
    escrow.claim(edge_account, job, 10, ENVELOPE)
    assert escrow.credit(evil.address) == 90 * PRICE
    if reentries:
        with pytest.raises(BadInput, match="escrow refused: reverted without a reason"):
            Escrow._send(chain, researcher, evil.address, evil._data("withdraw"))
        assert escrow.credit(evil.address) == 90 * PRICE
        assert chain.tester.get_balance(escrow.address) == 100 * PRICE
    else:
        Escrow._send(chain, researcher, evil.address, evil._data("withdraw"))
        assert escrow.credit(evil.address) == 0
        assert chain.tester.get_balance(evil.address) == 90 * PRICE


# -- the chain forgets nothing ----------------------------------------------------------------

def test_locks_and_claims_survive_a_restart_of_the_embedded_chain(tmp_path, chain, escrow, researcher,
                                                                   edge_account):
    lock(escrow, researcher)
    claim = escrow.claim(edge_account, "job-1", 12, ENVELOPE)
    again = Escrow(EmbeddedChain(tmp_path / "chain", edge_account), escrow.address)
    assert again.lock_of("job-1")["records"] == 12
    assert again.claim_of("job-1", claim.tx_hash, claim.block_number) == claim
    assert again.credit(researcher.address) == 88 * PRICE
