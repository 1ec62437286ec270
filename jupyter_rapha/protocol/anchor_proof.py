"""Anchor blocks of a receipt and their pure checks (no chain access here).

Three forms are understood:

``{"status": "pending", "envelope_sha256"}``
    The edge released the results while its chain was unreachable and will anchor the
    receipt later; the researcher fetches the anchored receipt again from the edge.
``{"method": "evm-tx", chain_id, tx_hash, block_number, envelope_sha256}``
    One transaction per receipt whose data is the envelope digest (the first format).
``{"method": "evm-batch", chain_id, tx_hash, block_number, envelope_sha256,
   "batch": {"root", "index", "size", "proof": [hex...]}}``
    One transaction per batch whose data is the RFC 6962 Merkle root over the batch's
    envelope digests (leaf = the 32 digest bytes); ``proof`` is this receipt's audit path.
    ``batch.audit_head`` (optional): ``{"entries", "head", "index", "proof"}``, the edge's
    audit log head when the batch was formed. Its leaf (``audit_head_leaf``) is the
    batch's last, so the root on chain commits to how long the log was then: an edge that
    later shows a shorter log, or another entry at that count, is caught by any reviewer
    holding a receipt. The leaf is longer than 32 bytes, so it can never be taken for an
    envelope digest; verifiers that do not know the block ignore it.

The inclusion proof is checked without a chain, so ``--offline`` still shows that this
envelope is one of the leaves the root commits to; the chain check then shows that the
edge's own account published that root deep enough in the chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .canonical import canonical_json
from .errors import VerificationError
from .merkle import InclusionProof, MerkleTree, verify_inclusion

METHOD_TX = "evm-tx"
METHOD_BATCH = "evm-batch"
PENDING = "pending"
MAX_BATCH_SIZE = 1 << 20  # a proof longer than 20 steps is refused before any hashing
_HEX32 = re.compile(r"^[0-9a-f]{64}$")
AUDIT_HEAD_TAG = b"rapha-audit-head/v1\n"
MAX_AUDIT_ENTRIES = 2**53 - 1


@dataclass(frozen=True)
class AnchorObservation:
    """What a chain says about the anchor transaction, fetched by the caller."""

    chain_id: int
    tx_hash: str
    block_number: int | None
    sender: str
    data: bytes
    head_block: int


# -- the edge side: one batch, many anchor blocks ------------------------------------------

def audit_head_leaf(entries: int, head: str) -> bytes:
    return AUDIT_HEAD_TAG + canonical_json({"entries": entries, "head": head})


def batch_tree(envelope_digests: list[str], audit_head: tuple[int, str] | None = None) -> MerkleTree:
    """The tree whose root a batch transaction carries; leaves keep the given order, and
    the audit head, when given, is the last leaf."""
    leaves = [bytes.fromhex(d) for d in envelope_digests]
    return MerkleTree(leaves + ([audit_head_leaf(*audit_head)] if audit_head is not None else []))


def batch_anchor(tree: MerkleTree, index: int, *, chain_id: int, tx_hash: str, block_number: int,
                 audit_head: tuple[int, str] | None = None) -> dict[str, Any]:
    proof = tree.prove(index)
    anchor = {"method": METHOD_BATCH, "chain_id": int(chain_id), "tx_hash": tx_hash,
              "block_number": int(block_number), "envelope_sha256": tree.leaves[index].hex(),
              "batch": {"root": tree.root.hex(), "index": index, "size": len(tree),
                        "proof": [step.hex() for step in proof.path]}}
    return with_audit_head(anchor, tree, audit_head)


def with_audit_head(anchor: dict[str, Any], tree: MerkleTree, audit_head: tuple[int, str] | None) -> dict[str, Any]:
    """Add the audit head block to an anchor of ``tree`` (any anchor form with a batch)."""
    if audit_head is not None:
        index = len(tree) - 1
        if tree.leaves[index] != audit_head_leaf(*audit_head):
            raise ValueError("the batch's last leaf is not this audit head")
        anchor["batch"]["audit_head"] = {"entries": audit_head[0], "head": audit_head[1], "index": index,
                                         "proof": [step.hex() for step in tree.prove(index).path]}
    return anchor


def pending_anchor(envelope_sha256: str) -> dict[str, Any]:
    return {"status": PENDING, "envelope_sha256": envelope_sha256}


# -- the verifier side -------------------------------------------------------------------

def is_pending(anchor: Any) -> bool:
    return isinstance(anchor, dict) and anchor.get("status") == PENDING and "method" not in anchor


def anchored_data(anchor: dict[str, Any], digest: str) -> bytes:
    """The 32 bytes the anchor transaction must carry: the digest itself or the batch
    root. Raises VerificationError when the batch proof does not hold."""
    method = anchor.get("method", METHOD_TX)
    if method == METHOD_TX:
        return bytes.fromhex(digest)
    if method != METHOD_BATCH:
        raise VerificationError(f"anchor method {str(method)[:32]!r} is not understood by this verifier")
    root, proof = _batch_proof(anchor.get("batch"))
    # The leaf is this envelope's digest as recomputed by the verifier, never the
    # anchor's claim about it: a forged anchor cannot borrow another receipt's place.
    verify_inclusion(bytes.fromhex(digest), proof, root)
    return root


def audit_head_inclusion(anchor: dict[str, Any]) -> tuple[int, str] | None:
    """The audit head the anchored batch root commits to; None when the anchor has none.
    Raises VerificationError when its proof does not lead to the batch root."""
    batch = anchor.get("batch")
    if not isinstance(batch, dict) or batch.get("audit_head") is None:
        return None
    block = batch["audit_head"]
    if not isinstance(block, dict):
        raise VerificationError("batch audit_head is not an object")
    root, _ = _batch_proof(batch)
    entries, head = block.get("entries"), block.get("head")
    if not (isinstance(entries, int) and _is_count(entries) and entries <= MAX_AUDIT_ENTRIES
            and isinstance(head, str) and _HEX32.match(head)):
        raise VerificationError("batch audit_head needs a whole number of entries and a 32-byte hex head")
    _, proof = _batch_proof(dict(batch, index=block.get("index"), proof=block.get("proof")))
    if proof.index != proof.tree_size - 1:
        raise VerificationError("the audit head must be the batch's last leaf")
    verify_inclusion(audit_head_leaf(entries, head), proof, root)
    return entries, head


def _batch_proof(batch: Any) -> tuple[bytes, InclusionProof]:
    if not isinstance(batch, dict):
        raise VerificationError("evm-batch anchor has no batch block")
    root, index, size, path = batch.get("root"), batch.get("index"), batch.get("size"), batch.get("proof")
    if not (isinstance(root, str) and _HEX32.match(root)):
        raise VerificationError("batch root is not 32 bytes of lowercase hex")
    if not (isinstance(index, int) and isinstance(size, int) and _is_count(index) and _is_count(size)
            and 0 < size <= MAX_BATCH_SIZE):
        raise VerificationError("batch index and size must be non-negative integers within bounds")
    if not (isinstance(path, list) and len(path) <= 64 and all(isinstance(p, str) and _HEX32.match(p) for p in path)):
        raise VerificationError("batch proof must be a list of 32-byte lowercase hex hashes")
    return bytes.fromhex(root), InclusionProof(index, size, tuple(bytes.fromhex(p) for p in path))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def anchor_matches(anchor: dict[str, Any], predicate: dict[str, Any], obs: AnchorObservation,
                   data: bytes, min_confirmations: int) -> tuple[bool, str]:
    """Compare the chain's answer with the anchor; ``data`` is from ``anchored_data``."""
    edge = predicate.get("edge", {})
    if obs.tx_hash.lower() != str(anchor.get("tx_hash", "")).lower():
        return False, "the chain returned a different transaction than the anchor names"
    if obs.chain_id != anchor.get("chain_id") or obs.chain_id != edge.get("chain_id"):
        return False, f"chain id {obs.chain_id} is not the anchored chain {anchor.get('chain_id')}"
    if obs.data != data:
        what = "batch root" if anchor.get("method") == METHOD_BATCH else "envelope digest"
        return False, f"anchor transaction data is not this receipt's {what}"
    # The signed predicate names the sender: anyone can publish a root, only the edge's
    # registered account may publish one that counts.
    if obs.sender.lower() != str(edge.get("anchor_address", "")).lower():
        return False, "anchor transaction was not sent by the edge's anchor address"
    if obs.block_number is None or obs.block_number != anchor.get("block_number"):
        return False, "anchor transaction is not in the block the receipt names"
    confirmations = obs.head_block - obs.block_number + 1
    if confirmations < min_confirmations:
        return False, f"{confirmations} confirmations, {min_confirmations} required"
    return True, (f"tx {obs.tx_hash[:12]}… in block {obs.block_number} on chain {obs.chain_id}, "
                  f"{confirmations} confirmations")
