"""Non-inclusion in a sorted Merkle tree: two adjacent leaves prove a pseudonym absent."""

from __future__ import annotations

import hashlib
from itertools import pairwise

import pytest

from jupyter_rapha.protocol.errors import VerificationError
from jupyter_rapha.protocol.merkle import (EMPTY_ROOT, InclusionProof, MerkleTree, NonInclusionProof,
                                           non_inclusion_proof_from_dict, non_inclusion_proof_to_dict,
                                           prove_non_inclusion, verify_inclusion, verify_non_inclusion)


def _leaves(n: int) -> list[bytes]:
    return sorted(hashlib.sha256(b"leaf%d" % i).digest() for i in range(n))


def _absent(leaves: list[bytes]) -> list[bytes]:
    """Targets below, between and above the leaves."""
    targets = [b"\x00" * 32, b"\xff" * 32]
    for a, b in pairwise(leaves):
        middle = (int.from_bytes(a, "big") + int.from_bytes(b, "big")) // 2
        if middle != int.from_bytes(a, "big"):
            targets.append(middle.to_bytes(32, "big"))
    return targets


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_every_absent_target_has_a_proof_that_verifies(n):
    leaves = _leaves(n)
    root = MerkleTree.sorted_unique(leaves).root
    for target in _absent(leaves):
        proof = prove_non_inclusion(leaves, target)
        verify_non_inclusion(target, proof, root)
        verify_non_inclusion(target, non_inclusion_proof_from_dict(non_inclusion_proof_to_dict(proof)), root)


def test_a_present_leaf_has_no_non_inclusion_proof_and_fails_every_forgery():
    leaves = _leaves(6)
    root = MerkleTree(leaves).root
    with pytest.raises(ValueError):
        prove_non_inclusion(leaves, leaves[2])
    # Forge: neighbours around a present leaf, skipping it (not adjacent).
    tree = MerkleTree(leaves)
    forged = NonInclusionProof(6, (leaves[1], tree.prove(1)), (leaves[3], tree.prove(3)))
    with pytest.raises(VerificationError):
        verify_non_inclusion(leaves[2], forged, root)
    # Forge: only one side claimed, but it is not the tree's end.
    with pytest.raises(VerificationError):
        verify_non_inclusion(leaves[2], NonInclusionProof(6, (leaves[1], tree.prove(1)), None), root)
    with pytest.raises(VerificationError):
        verify_non_inclusion(leaves[2], NonInclusionProof(6, None, (leaves[3], tree.prove(3))), root)


def test_wrong_root_wrong_order_and_tampered_path_fail():
    leaves = _leaves(7)
    target = _absent(leaves)[3]
    proof = prove_non_inclusion(leaves, target)
    with pytest.raises(VerificationError):
        verify_non_inclusion(target, proof, MerkleTree(leaves[:-1]).root)
    swapped = NonInclusionProof(proof.tree_size, proof.right, proof.left)
    with pytest.raises(VerificationError):
        verify_non_inclusion(target, swapped, MerkleTree(leaves).root)
    leaf, inner = proof.left
    bad_path = (bytes(32),) + inner.path[1:]
    with pytest.raises(VerificationError):
        verify_non_inclusion(target, NonInclusionProof(7, (leaf, InclusionProof(inner.index, 7, bad_path)),
                                                       proof.right), MerkleTree(leaves).root)
    with pytest.raises(VerificationError):
        verify_non_inclusion(target, NonInclusionProof(7, None, None), MerkleTree(leaves).root)
    with pytest.raises(ValueError):
        prove_non_inclusion(list(reversed(leaves)), target)


def test_empty_tree_and_malformed_documents():
    proof = prove_non_inclusion([], b"x" * 32)
    verify_non_inclusion(b"x" * 32, proof, EMPTY_ROOT)
    with pytest.raises(VerificationError):
        verify_non_inclusion(b"x" * 32, proof, MerkleTree(_leaves(1)).root)
    bad_leaf = {"tree_size": 2, "left": {"leaf": "zz", "index": 0, "tree_size": 2, "path": []}}
    for doc in ({}, {"tree_size": "2"}, bad_leaf):
        with pytest.raises(VerificationError):
            non_inclusion_proof_from_dict(doc)


def test_inclusion_and_non_inclusion_agree_with_the_tree():
    leaves = _leaves(9)
    tree = MerkleTree(leaves)
    for index, leaf in enumerate(leaves):
        verify_inclusion(leaf, tree.prove(index), tree.root)
