"""The per-record escrow: amounts in token units, job keys, and the contract's artefact.

The contract (``escrow.vy`` beside this file, Vyper) is shipped as audited source plus
the artefact compiled from it (``escrow_artifact``); ``tests/settlement`` recompiles the
source with the pinned compiler and compares, byte for byte. Both sides read this
module: the edge to deploy and claim, the researcher to lock and to verify a claim.

Amounts on chain are integers in the token's smallest unit. A dataset's price per record
is a decimal text ("0.01"); ``to_units`` turns it into units of a token with
``decimals`` places and refuses a price that the token cannot represent exactly, since
rounding it would settle a different price than the catalogue shows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import BadInput

# The dev chain's native currency (wei): 18 decimal places.
NATIVE_DECIMALS = 18
_JOB_DOMAIN = b"rapha-escrow-job/v1\0"
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def job_key(job_id: str) -> bytes:
    """The contract's 32-byte key for a job: a domain-separated SHA-256 of its id."""
    if not isinstance(job_id, str) or not job_id:
        raise BadInput("an escrow job key needs a job id")
    return hashlib.sha256(_JOB_DOMAIN + job_id.encode()).digest()


def to_units(price: str, decimals: int = NATIVE_DECIMALS, *, what: str = "price per record") -> int:
    """``price`` (a plain decimal text) in the token's smallest unit, exactly."""
    text = str(price).strip()
    if not _DECIMAL.fullmatch(text):
        raise BadInput(f"{what} must be a decimal of 0 or more, such as 0.05, not {text!r}")
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 36:
        raise BadInput(f"token decimals must be an integer from 0 to 36, not {decimals!r}")
    places = len(text.partition(".")[2].rstrip("0"))
    if places > decimals:
        raise BadInput(f"{what} {text} has {places} decimal places; the settlement token has {decimals}",
                       hint=f"use at most {decimals} decimal places")
    try:
        return int(Decimal(text).scaleb(decimals))
    except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
        raise BadInput(f"{what} {text!r} is not a decimal") from None


def from_units(units: int, decimals: int = NATIVE_DECIMALS) -> str:
    """Token units as a plain decimal text, without trailing zeros ("0.01", "3")."""
    value = Decimal(int(units)).scaleb(-decimals)
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def max_cost_units(price_units: int, max_records: int) -> int:
    """What a job locks: its price per record times its record budget."""
    if price_units < 0 or max_records < 0:
        raise BadInput("a price and a record budget cannot be negative")
    return int(price_units) * int(max_records)


def shortfall(balance_units: int, price_units: int, max_records: int) -> int:
    """How much is missing from ``balance_units`` to lock a job's maximum (0: enough)."""
    return max(0, max_cost_units(price_units, max_records) - int(balance_units))


# -- the claim on chain, checked against a receipt --------------------------------------------

# keccak256("Claimed(bytes32,address,uint256,uint256,uint256,bytes32)"), the event's topic 0
# (tests/settlement checks it against the contract's ABI).
CLAIMED_TOPIC = "0xa46906d4fb0ef1ec23339e28270fc70aca8ebdb12c95171ff0bf4c8e114507a9"
CLAIM_METHOD = "evm-escrow"


@dataclass(frozen=True)
class ClaimLog:
    address: str
    topics: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class ClaimObservation:
    """What a chain says about a claim transaction (its receipt), fetched by the caller."""

    chain_id: int
    tx_hash: str
    block_number: int | None
    to: str
    status: int
    logs: tuple[ClaimLog, ...]


def claim_block(*, chain_id: int, contract: str, tx_hash: str, block_number: int, records: int, paid: int,
                refunded: int, price_units: int, decimals: int = NATIVE_DECIMALS) -> dict[str, Any]:
    """The receipt's ``settlement_claim`` block: added beside the signed envelope once the
    claim is mined, like the anchor (the claim names the envelope's digest, so it cannot be
    inside it)."""
    return {"method": CLAIM_METHOD, "chain_id": int(chain_id), "contract": contract, "tx_hash": tx_hash,
            "block_number": int(block_number), "records": int(records), "price_units": int(price_units),
            "paid_units": int(paid), "refunded_units": int(refunded), "decimals": int(decimals),
            "paid": from_units(paid, decimals), "refunded": from_units(refunded, decimals)}


def claim_matches(claim: dict[str, Any], *, job_id: str, envelope_sha256: str, metered_records: int,
                  obs: ClaimObservation) -> tuple[bool, str]:
    """Whether the chain's claim transaction is the one the receipt names: mined and
    successful, sent to the named contract, carrying one Claimed event of that contract for
    this job with this envelope digest, the metered record count and the receipt's amounts."""
    try:
        named = {k: int(claim[k]) for k in ("chain_id", "records", "paid_units", "refunded_units", "price_units")}
        contract, tx_hash = str(claim["contract"]).lower(), str(claim["tx_hash"]).lower()
    except (KeyError, TypeError, ValueError):
        return False, "the receipt's settlement claim is malformed"
    if obs.tx_hash.lower() != tx_hash:
        return False, "the chain answered about another transaction"
    if obs.chain_id != named["chain_id"]:
        return False, f"claim is on chain {named['chain_id']}, the RPC serves chain {obs.chain_id}"
    if obs.block_number is None or obs.status != 1:
        return False, "the claim transaction is not mined successfully"
    if obs.to.lower() != contract:
        return False, "the claim transaction was not sent to the named escrow contract"
    if named["records"] != metered_records:
        return False, f"the claim names {named['records']} records, the signed meter {metered_records}"
    if named["paid_units"] != named["records"] * named["price_units"]:
        return False, "the claim's amount is not records x price"
    key = "0x" + job_key(job_id).hex()
    events = [log for log in obs.logs if log.address.lower() == contract and log.topics[:1] == (CLAIMED_TOPIC,)]
    if len(events) != 1 or len(events[0].topics) < 2 or events[0].topics[1].lower() != key:
        return False, "the claim transaction has no Claimed event for this job"
    data = events[0].data
    if len(data) != 128:
        return False, "the Claimed event does not decode"
    records, paid, refunded = (int.from_bytes(data[i:i + 32], "big") for i in (0, 32, 64))
    if (records, paid, refunded) != (named["records"], named["paid_units"], named["refunded_units"]):
        return False, (f"on chain the claim is {records} records, {paid} paid, {refunded} refunded;"
                       f" the receipt says {named['records']}, {named['paid_units']}, {named['refunded_units']}")
    if data[96:].hex() != envelope_sha256.lower():
        return False, "the claim on chain names another receipt envelope"
    return True, f"claimed {records} records ({claim.get('paid', paid)} paid) in block {obs.block_number}"
