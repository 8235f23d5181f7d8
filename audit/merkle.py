"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs (https://www.rfc-editor.org/rfc/rfc9162 §2.1).

Pure functions over values, no I/O. Trees are addressed through ``Subtrees``: the root of every complete, aligned
subtree (``level`` l, ``index`` i: the leaves ``i * 2**l .. (i + 1) * 2**l - 1``), which is exactly what C2SP tiles
store (audit/tiles.py), so a proof costs O(log n) lookups whatever the tree size. ``MemoryTree`` serves small trees
and the tests.

- §2.1.1: leaf hash ``SHA-256(0x00 || leaf)``, node hash ``SHA-256(0x01 || left || right)``, the empty tree hashes
  to ``SHA-256()``; a tree of n > 1 leaves splits at k, the largest power of two smaller than n.
- §2.1.3.1 / §2.1.4.1: proof generation (``inclusion_proof``, ``consistency_proof``).
- §2.1.3.2 / §2.1.4.2: proof verification (``verify_inclusion``, ``verify_consistency``), which raise
  ``ProofError`` with the reason.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof does not prove what it claims; the message says why."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


Subtrees = Callable[[int, int], bytes]  # (level, index) -> root of that complete aligned subtree


def range_hash(sub: Subtrees, lo: int, hi: int) -> bytes:
    """MTH of the leaves ``lo..hi-1`` where ``lo`` is aligned as in the §2.1.1 recursion: the complete subtrees of
    the range's binary decomposition, folded from the right."""
    parts: list[bytes] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        parts.append(sub(level, lo >> level))
        lo += 1 << level
    acc = parts.pop()
    while parts:
        acc = node_hash(parts.pop(), acc)
    return acc


def root(sub: Subtrees, n: int) -> bytes:
    return EMPTY_ROOT if n == 0 else range_hash(sub, 0, n)


def inclusion_proof(sub: Subtrees, index: int, n: int) -> list[bytes]:
    """PATH(index, D[0:n]) of §2.1.3.1, leaf-side first."""
    if not 0 <= index < n:
        raise ProofError(f"leaf {index} is not in a tree of size {n}")
    out: list[bytes] = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append(range_hash(sub, lo + k, hi))
            hi = lo + k
        else:
            out.append(range_hash(sub, lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_proof(sub: Subtrees, m: int, n: int) -> list[bytes]:
    """PROOF(m, D[0:n]) of §2.1.4.1 (empty for m == 0 or m == n)."""
    if not 0 <= m <= n:
        raise ProofError(f"no consistency proof from size {m} to size {n}")
    if m == 0 or m == n:
        return []
    out: list[bytes] = []
    lo, hi, whole = 0, n, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append(range_hash(sub, lo + k, hi))
            hi = lo + k
        else:
            out.append(range_hash(sub, lo, lo + k))
            m -= k
            lo += k
            whole = False
    if not whole:
        out.append(range_hash(sub, lo, hi))
    out.reverse()
    return out


def _check_hashes(proof: Sequence[bytes], *roots: bytes) -> None:
    if any(len(h) != HASH_SIZE for h in (*proof, *roots)):
        raise ProofError("a hash in the proof is not 32 bytes")


def verify_inclusion(leaf: bytes, index: int, n: int, proof: Sequence[bytes], expected: bytes) -> None:
    """§2.1.3.2: ``leaf`` (a leaf hash) is entry ``index`` of the tree of size ``n`` with root ``expected``."""
    _check_hashes(proof, leaf, expected)
    if not 0 <= index < n:
        raise ProofError(f"leaf index {index} is not below the tree size {n}")
    fn, sn, r = index, n - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is high")
    if r != expected:
        raise ProofError("inclusion proof leads to another root than the checkpoint's")


def verify_consistency(m: int, n: int, proof: Sequence[bytes], first: bytes, second: bytes) -> None:
    """§2.1.4.2: the tree of size ``n`` with root ``second`` extends the tree of size ``m`` with root ``first``."""
    _check_hashes(proof, first, second)
    if not 0 <= m <= n:
        raise ProofError(f"size {n} is smaller than size {m}: not an extension")
    if m == n or m == 0:
        if proof:
            raise ProofError("a consistency proof between these sizes must be empty")
        if m == n and first != second:
            raise ProofError(f"two different roots for the same size {m}")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if m & (m - 1) == 0:  # m is a power of two: the old root is itself a node of the new tree
        path.insert(0, first)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the tree is high")
    if fr != first:
        raise ProofError(f"the tree of size {n} does not contain the tree of size {m} (rewritten or forked)")
    if sr != second:
        raise ProofError(f"consistency proof leads to another root of size {n} than the checkpoint's")


def aligned_levels(leaves: Sequence[bytes], top: int) -> list[list[bytes]]:
    """``levels[l][j]``: the root of the complete subtree over ``leaves[j * 2**l:(j + 1) * 2**l]``, for l up to
    ``top`` (the leaves' first index must be a multiple of ``2**top`` in the tree for these to be its subtrees)."""
    levels = [list(leaves)]
    sha = hashlib.sha256
    for _ in range(top):
        pairs = iter(levels[-1])
        levels.append([sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs)])  # node_hash
    return levels


def pieces(levels: list[list[bytes]], start: int, count: int) -> list[bytes]:
    """The roots of the complete subtrees the ``count`` leaves of ``levels`` from ``start`` decompose into, largest
    first (§2.1.1 recursion), for ``count`` below ``2**(len(levels) - 1)`` and ``start`` a multiple of it."""
    out, lo = [], start
    for level in reversed(range(len(levels))):
        if count >> level & 1:
            out.append(levels[level][lo >> level])
            lo += 1 << level
    return out


def leaf_run(first: int, data: Sequence[bytes], sizes: Sequence[int], height: int
             ) -> tuple[bytes, bytes, dict[int, bytes]]:
    """For the entries ``first``, ``first + 1``... whose bytes are ``data``: their leaf hashes (concatenated), the
    roots of the aligned subtrees of ``2**height`` leaves lying wholly among them (concatenated, from the first
    aligned one on), and for each tree size in ``sizes`` (sorted) that ends inside such a subtree starting among them,
    the concatenated ``pieces`` of that subtree's part below the size: what the tree's root at that size needs
    beyond the frontier at the subtree's start. Computed where the bytes are read (verify's workers)."""
    sha = hashlib.sha256
    leaves = [sha(b"\x00" + entry).digest() for entry in data]
    width = 1 << height
    skip = -first % width
    levels = aligned_levels(leaves[skip:], height)
    aligned, end = first + skip, first + len(data)
    found: dict[int, bytes] = {}
    for size in sizes[bisect.bisect_right(sizes, aligned):bisect.bisect_right(sizes, end)]:
        if size % width:
            found[size] = b"".join(pieces(levels, size - size % width - aligned, size % width))
    return b"".join(leaves), b"".join(levels[height]), found


def frontier_at(sub: Subtrees, size: int) -> Frontier:
    """The frontier of the first ``size`` leaves, from stored subtrees (to go on from a tree's middle)."""
    hashes, lo = [], 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            hashes.append(sub(level, lo >> level))
            lo += 1 << level
    return Frontier(size, hashes)


class Frontier:
    """The roots of the complete subtrees a tree of ``size`` leaves decomposes into (largest first): enough to
    append leaves and compute the root, in O(log n) memory. The shipper keeps one to sign checkpoints."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} hashes, not {len(hashes)}")
        self.size, self.hashes = size, list(hashes)

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash."""
        self.hashes.append(leaf)
        size = self.size
        while size & 1:
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)
            size >>= 1
        self.size += 1

    def append_subtree(self, level: int, root: bytes) -> None:
        """Add the root of a complete subtree of ``2**level`` leaves; the size must be a multiple of its width (the
        frontier is then the one appending its leaves one by one would give)."""
        if self.size & ((1 << level) - 1):
            raise ValueError(f"a subtree of level {level} cannot start at leaf {self.size}")
        self.hashes.append(root)
        size = self.size >> level
        while size & 1:
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)
            size >>= 1
        self.size += 1 << level

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        acc = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            acc = node_hash(h, acc)
        return acc

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)


class MemoryTree:
    """A tree held as all its levels (small trees, tests, a receipt's own checks)."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    def append(self, leaf: bytes) -> None:
        self.levels[0].append(leaf)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            pair = self.levels[level][-2:]
            if level + 1 == len(self.levels):
                self.levels.append([])
            self.levels[level + 1].append(node_hash(*pair))
            level += 1

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def subtree(self, level: int, index: int) -> bytes:
        return self.levels[level][index]
