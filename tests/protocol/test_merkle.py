import os

import pytest

from jupyter_rapha.protocol.errors import VerificationError
from jupyter_rapha.protocol.merkle import EMPTY_ROOT, InclusionProof, MerkleTree, leaf_hash, node_hash, verify_inclusion


def test_rfc6962_shape_for_three_leaves():
    tree = MerkleTree([b"a", b"b", b"c"])
    assert tree.root == node_hash(node_hash(leaf_hash(b"a"), leaf_hash(b"b")), leaf_hash(b"c"))
    assert MerkleTree([]).root == EMPTY_ROOT


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100])
def test_every_leaf_proves_and_no_other_leaf_does(size):
    leaves = [os.urandom(16) for _ in range(size)]
    tree = MerkleTree(leaves)
    for index, leaf in enumerate(leaves):
        proof = tree.prove(index)
        verify_inclusion(leaf, proof, tree.root)
        with pytest.raises(VerificationError):
            verify_inclusion(b"not a leaf", proof, tree.root)
        if proof.path:
            bent = InclusionProof(proof.index, proof.tree_size, (os.urandom(32),) + proof.path[1:])
            with pytest.raises(VerificationError):
                verify_inclusion(leaf, bent, tree.root)


def test_sorted_unique_is_order_independent():
    leaves = [os.urandom(8) for _ in range(20)]
    assert MerkleTree.sorted_unique(leaves).root == MerkleTree.sorted_unique(list(reversed(leaves)) + leaves).root


def test_proof_outside_the_tree_is_refused():
    tree = MerkleTree([b"a", b"b"])
    with pytest.raises(VerificationError):
        verify_inclusion(b"a", InclusionProof(5, 2, tree.prove(0).path), tree.root)
