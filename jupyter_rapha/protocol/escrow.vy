# pragma version 0.4.3
# pragma evm-version shanghai
"""
@title Per-record escrow for one edge
@notice A researcher locks, per job, the price per record times the job's record
        budget. The edge that deployed this contract claims exactly the records its
        broker metered, naming the job and the receipt's envelope digest; the rest is
        credited back to the researcher in the same transaction. A job is claimed at
        most once and never for more than its lock; a lock the edge never claimed can
        be cancelled by its researcher after its expiry. Payments are pulled
        (withdraw), never pushed, and withdraw cannot be re-entered.
"""

FREE: constant(uint8) = 0
LOCKED: constant(uint8) = 1
CLAIMED: constant(uint8) = 2
CANCELLED: constant(uint8) = 3

struct Lock:
    researcher: address
    price: uint256
    max_records: uint256
    amount: uint256
    expiry: uint256
    state: uint8
    records: uint256
    envelope: bytes32

event Locked:
    job: indexed(bytes32)
    researcher: indexed(address)
    price: uint256
    max_records: uint256
    amount: uint256
    expiry: uint256

event Claimed:
    job: indexed(bytes32)
    researcher: indexed(address)
    records: uint256
    paid: uint256
    refunded: uint256
    envelope: bytes32

event Cancelled:
    job: indexed(bytes32)
    researcher: indexed(address)
    refunded: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256

EDGE: public(immutable(address))
locks: public(HashMap[bytes32, Lock])
credit: public(HashMap[address, uint256])


@deploy
def __init__():
    EDGE = msg.sender


@external
@payable
def lock(job: bytes32, price: uint256, max_records: uint256, expiry: uint256):
    assert self.locks[job].state == FREE, "job already locked"
    assert price > 0, "price is zero"
    assert max_records > 0, "budget is zero"
    assert expiry > block.timestamp, "expiry is not in the future"
    assert msg.value == price * max_records, "value is not price times budget"
    self.locks[job] = Lock(researcher=msg.sender, price=price, max_records=max_records, amount=msg.value,
                           expiry=expiry, state=LOCKED, records=0, envelope=empty(bytes32))
    log Locked(job=job, researcher=msg.sender, price=price, max_records=max_records, amount=msg.value,
               expiry=expiry)


@external
def claim(job: bytes32, records: uint256, envelope: bytes32):
    assert msg.sender == EDGE, "only the edge claims"
    entry: Lock = self.locks[job]
    assert entry.state == LOCKED, "job is not locked"
    assert records <= entry.max_records, "records exceed the budget"
    paid: uint256 = records * entry.price
    refunded: uint256 = entry.amount - paid
    self.locks[job].state = CLAIMED
    self.locks[job].records = records
    self.locks[job].envelope = envelope
    self.credit[EDGE] += paid
    self.credit[entry.researcher] += refunded
    log Claimed(job=job, researcher=entry.researcher, records=records, paid=paid, refunded=refunded,
                envelope=envelope)


@external
def cancel(job: bytes32):
    entry: Lock = self.locks[job]
    assert entry.state == LOCKED, "job is not locked"
    assert msg.sender == entry.researcher, "only the researcher cancels"
    assert block.timestamp >= entry.expiry, "lock has not expired"
    self.locks[job].state = CANCELLED
    self.credit[entry.researcher] += entry.amount
    log Cancelled(job=job, researcher=entry.researcher, refunded=entry.amount)


@external
@nonreentrant
def withdraw():
    amount: uint256 = self.credit[msg.sender]
    assert amount > 0, "nothing to withdraw"
    self.credit[msg.sender] = 0
    log Withdrawn(account=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)
