"""audit/merkle.py against published RFC 6962/9162 test vectors and the RFC's own recursive definitions.

Vectors: transparency-dev/merkle, proof/verify_test.go (the RFC 6962 vectors inherited from
certificate-transparency): eight leaves, the roots of the trees of sizes 1..8, and inclusion and consistency proofs.
Every (index, size) and (m, n) pair up to 8 (and up to 70 against the recursive reference) is generated and verified;
hypothesis flips bits, reorders and truncates proofs and requires verification to fail.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import merkle
from audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                      "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]
# (leaf index, tree size, proof); the vector file numbers leaves from 1
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]

TREE = MemoryTree([leaf_hash(d) for d in LEAVES])


# -- the RFC's recursive definitions, written out literally, as an independent reference ---------------------------

def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return leaf_hash(d[0])
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return path(m, d[:k]) + [mth(d[k:])] if m < k else path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [mth(d)]
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return subproof(m, d[:k], b) + [mth(d[k:])] if m <= k else subproof(m - k, d[k:], False) + [mth(d[:k])]


def test_roots_match_the_published_vectors_for_sizes_1_to_8() -> None:
    for n in range(1, 9):
        assert merkle.root(TREE.subtree, n) == ROOTS[n - 1]
        assert mth(LEAVES[:n]) == ROOTS[n - 1]
    assert merkle.root(TREE.subtree, 0) == EMPTY_ROOT == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_published_vectors(index: int, size: int, proof: list[str]) -> None:
    want = [bytes.fromhex(h) for h in proof]
    assert inclusion_proof(TREE.subtree, index, size) == want
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, want, ROOTS[size - 1])


@pytest.mark.parametrize(("m", "n", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_published_vectors(m: int, n: int, proof: list[str]) -> None:
    want = [bytes.fromhex(h) for h in proof]
    assert consistency_proof(TREE.subtree, m, n) == want
    verify_consistency(m, n, want, ROOTS[m - 1], ROOTS[n - 1])


def test_every_pair_up_to_70_leaves_against_the_recursive_definitions() -> None:
    data = [b"leaf %d" % i for i in range(70)]
    tree = MemoryTree([leaf_hash(d) for d in data])
    frontier = Frontier()
    for n in range(1, 71):
        frontier.append(leaf_hash(data[n - 1]))
        r = merkle.root(tree.subtree, n)
        assert r == mth(data[:n]) == frontier.root()
        for i in range(n):
            proof = inclusion_proof(tree.subtree, i, n)
            assert proof == path(i, data[:n])
            verify_inclusion(leaf_hash(data[i]), i, n, proof, r)
        for m in range(1, n + 1):
            proof = consistency_proof(tree.subtree, m, n)
            assert proof == (subproof(m, data[:n], True) if m < n else [])
            verify_consistency(m, n, proof, mth(data[:m]), r)


def test_frontier_restores_from_its_hashes() -> None:
    f = Frontier()
    for i in range(13):
        f.append(leaf_hash(b"%d" % i))
    assert Frontier(13, f.hashes).root() == f.root()
    with pytest.raises(ValueError, match="has 3 hashes, not 2"):
        Frontier(13, f.hashes[:2])


# -- forged proofs: each names the one check that catches it ---------------------------------------------------------

def test_inclusion_of_a_leaf_swapped_for_its_neighbour_fails() -> None:
    proof = inclusion_proof(TREE.subtree, 5, 8)
    with pytest.raises(ProofError, match="another root"):
        verify_inclusion(leaf_hash(LEAVES[4]), 5, 8, proof, ROOTS[7])


def test_inclusion_with_an_extra_trailing_hash_fails_on_length() -> None:
    proof = inclusion_proof(TREE.subtree, 5, 8) + [ROOTS[7]]
    with pytest.raises(ProofError, match="longer than the tree is high"):
        verify_inclusion(leaf_hash(LEAVES[5]), 5, 8, proof, ROOTS[7])


def test_inclusion_missing_a_hash_fails_on_length() -> None:
    proof = inclusion_proof(TREE.subtree, 5, 8)[:-1]
    with pytest.raises(ProofError, match="shorter than the tree is high"):
        verify_inclusion(leaf_hash(LEAVES[5]), 5, 8, proof, ROOTS[7])


def test_inclusion_index_beyond_the_tree_fails() -> None:
    with pytest.raises(ProofError, match="not below the tree size"):
        verify_inclusion(leaf_hash(LEAVES[0]), 8, 8, [], ROOTS[7])


def test_consistency_with_a_rewritten_old_tree_is_a_fork() -> None:
    """The new tree's proof is honest; the old root is of another history of the same size."""
    other = MemoryTree([leaf_hash(b"forged")] + [leaf_hash(d) for d in LEAVES[1:6]])
    old_root = merkle.root(other.subtree, 6)
    with pytest.raises(ProofError, match="does not contain the tree of size 6"):
        verify_consistency(6, 8, consistency_proof(TREE.subtree, 6, 8), old_root, ROOTS[7])


def test_consistency_to_a_smaller_tree_is_refused() -> None:
    with pytest.raises(ProofError, match="not an extension"):
        verify_consistency(8, 6, [], ROOTS[7], ROOTS[5])


def test_two_roots_for_one_size_are_refused() -> None:
    with pytest.raises(ProofError, match="two different roots for the same size 8"):
        verify_consistency(8, 8, [], ROOTS[7], ROOTS[6])


def test_empty_consistency_proof_is_refused() -> None:
    with pytest.raises(ProofError, match="empty consistency proof"):
        verify_consistency(6, 8, [], ROOTS[5], ROOTS[7])


def test_short_hash_in_a_proof_is_refused() -> None:
    with pytest.raises(ProofError, match="not 32 bytes"):
        verify_consistency(6, 8, [b"\x00" * 31], ROOTS[5], ROOTS[7])


BIG = MemoryTree([leaf_hash(b"%d" % i) for i in range(300)])


@given(st.data())
def test_any_tampered_inclusion_proof_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 300))
    i = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(BIG.subtree, i, n)
    r = merkle.root(BIG.subtree, n)
    # (a changed tree size is not a tamper here: the checkpoint binds the root to its size, and a proof may hold
    # for two sizes whose trees share the leaf's path)
    kind = data.draw(st.sampled_from(["flip", "drop", "add", "index"]))
    leaf, index = leaf_hash(b"%d" % i), i
    if kind == "flip":
        at = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        proof[at] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(proof[at]))
    elif kind == "drop":
        proof.pop(data.draw(st.integers(0, len(proof) - 1)))
    elif kind == "add":
        proof.insert(data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32)))
    else:
        index = data.draw(st.integers(0, n - 1).filter(lambda x: x != i))
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, n, proof, r)


@given(st.data())
def test_any_tampered_consistency_proof_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 300))
    m = data.draw(st.integers(1, n - 1))
    proof = consistency_proof(BIG.subtree, m, n)
    r1, r2 = merkle.root(BIG.subtree, m), merkle.root(BIG.subtree, n)
    kind = data.draw(st.sampled_from(["flip", "drop", "add", "m"]))
    if kind == "flip":
        at = data.draw(st.integers(0, len(proof) - 1))
        proof[at] = bytes([proof[at][0] ^ 1]) + proof[at][1:]
    elif kind == "drop":
        proof.pop(data.draw(st.integers(0, len(proof) - 1)))
    elif kind == "add":
        proof.insert(data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32)))
    else:
        m = data.draw(st.integers(1, n - 1).filter(lambda x: x != m))
    with pytest.raises(ProofError):
        verify_consistency(m, n, proof, r1, r2)
