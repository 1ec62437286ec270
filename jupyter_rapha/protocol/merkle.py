"""RFC 6962 / RFC 9162 Merkle trees with inclusion proofs.

Leaves and interior nodes are hashed with distinct prefixes (0x00, 0x01) so that a leaf
can never be passed off as a subtree. The record tree of a job is built over the
*sorted, unique* record pseudonyms, which makes the root independent of visiting order
and lets a hospital prove non-inclusion with two adjacent leaves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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
    def sorted_unique(cls, leaves: list[bytes]) -> "MerkleTree":
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
