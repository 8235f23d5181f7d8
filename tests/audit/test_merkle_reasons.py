"""Every refusal of audit/merkle.py names its reason, and the edges of each size rule (RFC 9162 §2.1.3 and §2.1.4):
each malformed proof is built from a genuine one so that only the targeted rule fails."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from audit import merkle
from audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    MemoryTree,
    ProofError,
    consistency_proof,
    frontier_at,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

TREE = MemoryTree([leaf_hash(bytes([i])) for i in range(13)])
SUB = TREE.subtree


def root(n: int) -> bytes:
    """MTH of the first ``n`` leaves."""
    return merkle.root(SUB, n)


def refused(call: Callable[[], object]) -> str:
    with pytest.raises(ProofError) as err:
        call()
    return str(err.value)


SHORT = b"\x00" * 31
PROOF = inclusion_proof(SUB, 5, 13)
CONSISTENCY = consistency_proof(SUB, 6, 13)


@pytest.mark.parametrize(("call", "reason"), [
    (lambda: verify_inclusion(SHORT, 5, 13, PROOF, root(13)), "a hash in the proof is not 32 bytes"),
    (lambda: verify_inclusion(TREE.levels[0][5], 5, 13, PROOF, SHORT), "a hash in the proof is not 32 bytes"),
    (lambda: verify_inclusion(TREE.levels[0][5], 5, 13, [*PROOF[:-1], SHORT], root(13)),
     "a hash in the proof is not 32 bytes"),
    (lambda: verify_inclusion(TREE.levels[0][5], 13, 13, PROOF, root(13)), "leaf index 13 is not below the tree size 13"),
    (lambda: verify_inclusion(TREE.levels[0][5], 5, 13, [*PROOF, PROOF[0]], root(13)),
     "inclusion proof is longer than the tree is high"),
    (lambda: verify_inclusion(TREE.levels[0][5], 5, 13, PROOF[:-1], root(13)),
     "inclusion proof is shorter than the tree is high"),
    (lambda: verify_inclusion(TREE.levels[0][5], 5, 13, PROOF, root(12)),
     "inclusion proof leads to another root than the checkpoint's"),
    (lambda: inclusion_proof(SUB, 13, 13), "leaf 13 is not in a tree of size 13"),
    (lambda: consistency_proof(SUB, 14, 13), "no consistency proof from size 14 to size 13"),
    (lambda: verify_consistency(6, 13, CONSISTENCY, SHORT, root(13)), "a hash in the proof is not 32 bytes"),
    (lambda: verify_consistency(6, 13, CONSISTENCY, root(6), SHORT), "a hash in the proof is not 32 bytes"),
    (lambda: verify_consistency(14, 13, [], root(13), root(13)), "size 13 is smaller than size 14: not an extension"),
    (lambda: verify_consistency(13, 13, [root(6)], root(13), root(13)),
     "a consistency proof between these sizes must be empty"),
    (lambda: verify_consistency(0, 13, [root(6)], root(0), root(13)),
     "a consistency proof between these sizes must be empty"),
    (lambda: verify_consistency(13, 13, [], root(12), root(13)), "two different roots for the same size 13"),
    (lambda: verify_consistency(6, 13, [], root(6), root(13)), "empty consistency proof"),
    (lambda: verify_consistency(6, 13, [*CONSISTENCY, CONSISTENCY[0]], root(6), root(13)),
     "consistency proof is longer than the tree is high"),
    (lambda: verify_consistency(6, 13, CONSISTENCY[:-1], root(6), root(13)),
     "consistency proof is shorter than the tree is high"),
    (lambda: verify_consistency(6, 13, CONSISTENCY, root(7), root(13)),
     "the tree of size 13 does not contain the tree of size 6 (rewritten or forked)"),
    (lambda: verify_consistency(6, 13, CONSISTENCY, root(6), root(12)),
     "consistency proof leads to another root of size 13 than the checkpoint's"),
])
def test_each_refusal_names_its_reason(call: Callable[[], object], reason: str) -> None:
    assert refused(call) == reason


def test_genuine_proofs_at_the_size_edges_verify() -> None:
    for n in range(1, 14):
        verify_inclusion(TREE.levels[0][n - 1], n - 1, n, inclusion_proof(SUB, n - 1, n), root(n))
        assert consistency_proof(SUB, 0, n) == [] and consistency_proof(SUB, n, n) == []
        verify_consistency(0, n, [], EMPTY_ROOT, root(n))
        verify_consistency(n, n, [], root(n), root(n))
        for m in range(1, n):
            verify_consistency(m, n, consistency_proof(SUB, m, n), root(m), root(n))


def test_frontier_from_stored_subtrees_continues_the_tree() -> None:
    for size in range(14):
        front = frontier_at(SUB, size)
        assert (front.size, front.root()) == (size, root(size))
        copy = front.copy()
        copy.append(leaf_hash(b"next"))
        assert (front.size, front.root(), front.hashes, copy.size) == (size, root(size), frontier_at(SUB, size).hashes,
                                                                       size + 1)
        assert Frontier(size, front.hashes).root() == root(size)
