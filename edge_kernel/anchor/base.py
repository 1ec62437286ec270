"""The anchor seam: commit a 32-byte digest to an EVM chain.

An anchor is a transaction from the edge's own account to itself, value 0, whose data is
exactly the digest. Anyone holding the receipt can then ask any node of that chain for
the transaction and compare its sender, data and block with what the receipt names
(``jupyter_rapha.protocol.receipt._anchor_matches``). The caller adds
``envelope_sha256`` to the returned dict.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from jupyter_rapha.protocol.errors import AnchorFault

ANCHOR_METHOD = "evm-tx"
DIGEST_BYTES = 32
# Tip offered to block producers; chains that want more say so through
# eth_maxPriorityFeePerGas (RpcAnchor asks them).
DEFAULT_TIP_WEI = 10**9


@runtime_checkable
class Anchor(Protocol):
    chain_id: int
    address: str

    def anchor(self, digest: bytes) -> dict[str, Any]:
        """Send the anchor transaction, wait until it is mined, return
        ``{"method", "chain_id", "tx_hash", "block_number"}``; raise AnchorFault."""
        ...


@dataclass(frozen=True)
class SignedAnchor:
    """An anchor transaction signed but perhaps not yet sent. The outbox stores it before
    sending, so that after a crash the *same* transaction (same nonce) is sent again and
    a root can never be published twice."""

    raw: bytes
    tx_hash: str
    nonce: int


@runtime_checkable
class BatchAnchor(Anchor, Protocol):
    """The two-phase form the outbox needs: sign, store, then send and watch."""

    def sign_anchor(self, digest: bytes) -> SignedAnchor:
        """Sign the anchor transaction for ``digest`` at the account's next nonce."""
        ...

    def broadcast(self, raw: bytes) -> None:
        """Send signed bytes; raise AnchorFault if the chain refuses or is unreachable."""
        ...

    def mined_block(self, tx_hash: str) -> int | None:
        """Block number of a mined, successful transaction; None if the chain does not
        know it (yet); AnchorFault if it failed on chain or the chain is unreachable."""
        ...

    def head_block(self) -> int: ...

    def confirmed_nonce(self) -> int:
        """How many transactions of the account are mined."""
        ...


@runtime_checkable
class ReplaceableAnchor(Protocol):
    """A batch anchor that can re-sign a stuck transaction at its nonce with higher fees."""

    def replace_anchor(self, digest: bytes, stuck: SignedAnchor) -> SignedAnchor: ...


def require_digest(digest: bytes) -> bytes:
    # Anything but a 32-byte digest would anchor something a verifier can never match.
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != DIGEST_BYTES:
        raise AnchorFault(f"anchor digest must be {DIGEST_BYTES} bytes")
    return bytes(digest)


def anchor_transaction(address: str, digest: bytes, *, nonce: int, chain_id: int,
                       gas: int, fees: dict[str, int]) -> dict[str, Any]:
    """The unsigned anchor transaction; ``fees`` holds either ``gasPrice`` (legacy)
    or ``maxFeePerGas`` and ``maxPriorityFeePerGas`` (EIP-1559)."""
    return {"from": address, "to": address, "value": 0, "data": require_digest(digest),
            "nonce": nonce, "chainId": chain_id, "gas": gas, **fees}


def anchor_gas(estimate: int, digest: bytes) -> int:
    """The estimate, but never below the EIP-7623 calldata floor (Prague), which some
    nodes leave out of their estimates; a transaction below it is invalid."""
    tokens = sum(1 if byte == 0 else 4 for byte in digest)
    return max(int(estimate), 21_000 + 10 * tokens)


def dynamic_fees(base_fee: int, tip: int) -> dict[str, int]:
    # Twice the base fee survives six full blocks of base-fee growth before inclusion.
    return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}


# A replacement at the same nonce must raise every fee field by at least 10% on most
# nodes (geth, bor, erigon); 12.5% leaves a margin for rounding.
FEE_BUMP_NUMERATOR, FEE_BUMP_DENOMINATOR = 9, 8


def signed_fees(raw: bytes) -> dict[str, int]:
    """The fee fields of a signed transaction: ``gasPrice`` (legacy, EIP-2930) or
    ``maxFeePerGas`` and ``maxPriorityFeePerGas`` (EIP-1559)."""
    import rlp

    try:
        if raw[:1] == b"\x02":
            fields = rlp.decode(raw[1:])
            return {"maxPriorityFeePerGas": int.from_bytes(fields[2], "big"),
                    "maxFeePerGas": int.from_bytes(fields[3], "big")}
        if raw[:1] == b"\x01":
            return {"gasPrice": int.from_bytes(rlp.decode(raw[1:])[2], "big")}
        if raw[:1] and raw[0] >= 0xC0:
            return {"gasPrice": int.from_bytes(rlp.decode(raw)[1], "big")}
    except (rlp.exceptions.DecodingError, IndexError, TypeError) as exc:
        raise AnchorFault("a stored anchor transaction does not decode") from exc
    raise AnchorFault("a stored anchor transaction is of an unknown type")


def bumped_fees(stuck: dict[str, int], market: dict[str, int]) -> dict[str, int]:
    """Fees for a replacement of a transaction stuck at its nonce: the market's now, but
    every field at least 12.5% above the stuck transaction's, in the stuck one's form."""
    def raised(value: int) -> int:
        return -(-value * FEE_BUMP_NUMERATOR // FEE_BUMP_DENOMINATOR)

    if "gasPrice" in stuck:
        offered = market.get("gasPrice", market.get("maxFeePerGas", 0))
        return {"gasPrice": max(int(offered), raised(stuck["gasPrice"]))}
    tip = max(market.get("maxPriorityFeePerGas", 0), raised(stuck["maxPriorityFeePerGas"]))
    cap = max(market.get("maxFeePerGas", market.get("gasPrice", 0)), raised(stuck["maxFeePerGas"]))
    return {"maxFeePerGas": max(cap, tip), "maxPriorityFeePerGas": tip}


def anchor_result(chain_id: int, tx_hash: str, block_number: int) -> dict[str, Any]:
    return {"method": ANCHOR_METHOD, "chain_id": int(chain_id),
            "tx_hash": tx_hash if tx_hash.startswith("0x") else "0x" + tx_hash,
            "block_number": int(block_number)}


@contextlib.contextmanager
def anchor_faults(action: str) -> Iterator[None]:
    """Wrap third-party failures once, at the boundary, into an AnchorFault whose
    message names the step but carries no internals (the cause stays chained for the
    edge's own log)."""
    try:
        yield
    except AnchorFault:
        raise
    except Exception as exc:
        raise AnchorFault(f"anchoring failed: could not {action}") from exc
