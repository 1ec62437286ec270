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
from decimal import Decimal, InvalidOperation

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
