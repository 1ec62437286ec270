"""RFC 6962 / RFC 9162 Merkle trees with inclusion proofs.

Leaves and interior nodes are hashed with distinct prefixes (0x00, 0x01) so that a leaf
can never be passed off as a subtree. The record tree of a job is built over the
*sorted, unique* record pseudonyms, which makes the root independent of visiting order
and lets a hospital prove non-inclusion with two adjacent leaves.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from itertools import pairwise

from .errors import VerificationError


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """Largest power of two strictly below ``n`` (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root(hashes: list[bytes]) -> bytes:
    if not hashes:
        return EMPTY_ROOT
    level = hashes
    # Bottom-up pairing gives the RFC 6962 shape: a lone last node is promoted.
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


@dataclass(frozen=True)
class InclusionProof:
    index: int
    tree_size: int
    path: tuple[bytes, ...]


class MerkleTree:
    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = list(leaves)
        self._hashes = [leaf_hash(leaf) for leaf in self.leaves]
        self.root = _root(self._hashes)

    @classmethod
    def sorted_unique(cls, leaves: list[bytes]) -> MerkleTree:
        return cls(sorted(set(leaves)))

    def __len__(self) -> int:
        return len(self.leaves)

    def prove(self, index: int) -> InclusionProof:
        if not 0 <= index < len(self._hashes):
            raise IndexError(f"leaf {index} is not in a tree of {len(self._hashes)}")
        return InclusionProof(index, len(self._hashes), tuple(_path(index, self._hashes)))


def _path(index: int, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) <= 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return _path(index, hashes[:k]) + [_root(hashes[k:])]
    return _path(index - k, hashes[k:]) + [_root(hashes[:k])]


def verify_inclusion(leaf: bytes, proof: InclusionProof, root: bytes) -> None:
    """RFC 9162 section 2.1.3.2; raise ``VerificationError`` if the proof fails."""
    if not 0 <= proof.index < proof.tree_size:
        raise VerificationError("inclusion proof index is outside the tree")
    fn, sn = proof.index, proof.tree_size - 1
    current = leaf_hash(leaf)
    for sibling in proof.path:
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            current = node_hash(sibling, current)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            current = node_hash(current, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0 or current != root:
        raise VerificationError("inclusion proof does not lead to the root")


# --- non-inclusion in a sorted tree ------------------------------------------------------
#
# A job's record tree holds its sorted, unique pseudonyms. A pseudonym is absent when the
# two leaves that would surround it are adjacent in the tree: proving both (with their
# indices) shows there is no room between them. At either end one neighbour suffices
# (index 0, or index tree_size - 1); an empty tree has the empty root.


@dataclass(frozen=True)
class NonInclusionProof:
    tree_size: int
    left: tuple[bytes, InclusionProof] | None  # the greatest leaf below the target
    right: tuple[bytes, InclusionProof] | None  # the smallest leaf above the target


def prove_non_inclusion(sorted_leaves: list[bytes], target: bytes) -> NonInclusionProof:
    """Build the proof over ``sorted_leaves`` (strictly increasing); raise ValueError if
    ``target`` is in the tree."""
    if any(a >= b for a, b in pairwise(sorted_leaves)):
        raise ValueError("non-inclusion needs strictly increasing leaves")
    tree = MerkleTree(sorted_leaves)
    position = bisect.bisect_left(sorted_leaves, target)
    if position < len(sorted_leaves) and sorted_leaves[position] == target:
        raise ValueError("the target is in the tree")
    left = (sorted_leaves[position - 1], tree.prove(position - 1)) if position > 0 else None
    right = (sorted_leaves[position], tree.prove(position)) if position < len(sorted_leaves) else None
    return NonInclusionProof(len(sorted_leaves), left, right)


def verify_non_inclusion(target: bytes, proof: NonInclusionProof, root: bytes) -> None:
    """Raise ``VerificationError`` unless the proof shows ``target`` is not a leaf of the
    sorted tree with ``root``."""
    if proof.tree_size == 0:
        if proof.left or proof.right or root != EMPTY_ROOT:
            raise VerificationError("non-inclusion proof for an empty tree does not match the root")
        return
    if proof.left is None and proof.right is None:
        raise VerificationError("non-inclusion proof names no neighbour")
    for side in (proof.left, proof.right):
        if side is not None:
            if side[1].tree_size != proof.tree_size:
                raise VerificationError("non-inclusion proof mixes trees of different sizes")
            verify_inclusion(side[0], side[1], root)
    _check_neighbours(target, proof)


def _check_neighbours(target: bytes, proof: NonInclusionProof) -> None:
    if proof.left is not None and not proof.left[0] < target:
        raise VerificationError("the left neighbour is not below the target")
    if proof.right is not None and not target < proof.right[0]:
        raise VerificationError("the right neighbour is not above the target")
    if proof.left is None and proof.right is not None and proof.right[1].index != 0:
        raise VerificationError("without a left neighbour the right one must be the first leaf")
    if proof.right is None and proof.left is not None and proof.left[1].index != proof.tree_size - 1:
        raise VerificationError("without a right neighbour the left one must be the last leaf")
    if proof.left is not None and proof.right is not None and proof.right[1].index != proof.left[1].index + 1:
        raise VerificationError("the neighbours are not adjacent leaves")


def inclusion_proof_to_dict(leaf: bytes, proof: InclusionProof) -> dict[str, object]:
    return {"leaf": leaf.hex(), "index": proof.index, "tree_size": proof.tree_size,
            "path": [node.hex() for node in proof.path]}


def inclusion_proof_from_dict(doc: dict[str, object]) -> tuple[bytes, InclusionProof]:
    try:
        nodes = doc["path"]
        if not isinstance(nodes, list):
            raise TypeError
        path = tuple(bytes.fromhex(str(node)) for node in nodes)
        index, size = doc["index"], doc["tree_size"]
        if not isinstance(index, int) or not isinstance(size, int):
            raise TypeError
        return bytes.fromhex(str(doc["leaf"])), InclusionProof(index, size, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError("malformed inclusion proof") from exc


def non_inclusion_proof_to_dict(proof: NonInclusionProof) -> dict[str, object]:
    return {"tree_size": proof.tree_size,
            "left": inclusion_proof_to_dict(*proof.left) if proof.left else None,
            "right": inclusion_proof_to_dict(*proof.right) if proof.right else None}


def non_inclusion_proof_from_dict(doc: dict[str, object]) -> NonInclusionProof:
    size = doc.get("tree_size") if isinstance(doc, dict) else None
    if not isinstance(size, int):
        raise VerificationError("malformed non-inclusion proof")
    sides: list[tuple[bytes, InclusionProof] | None] = []
    for key in ("left", "right"):
        side = doc.get(key)
        if side is not None and not isinstance(side, dict):
            raise VerificationError("malformed non-inclusion proof")
        sides.append(inclusion_proof_from_dict(side) if side else None)
    return NonInclusionProof(size, sides[0], sides[1])
