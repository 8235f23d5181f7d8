"""Tree checkpoints against the records, against the tiles and against each other (tee-audit v2).

The chain walk (audit/verify.py) checks every record, every link and every head checkpoint; it binds a tree
checkpoint to nothing. This module does, over the stored records in seq order: one at a time (``TreeWalk.add``),
or, for the local store's intact chunks, as the leaf hashes and tile roots verify's workers computed while they
scanned the chunk (``TreeWalk.add_run``, same findings: the records are not read a second time):

1. *Root*: the RFC 9162 root of the stored records (leaf = the stored RFC 8785 bytes of a record) at each tree
   checkpoint's size must be that checkpoint's root. Otherwise ``checkpoint-mismatch``: history rewritten.
2. *Fork*: a tree checkpoint known from elsewhere (``--known-checkpoint``: an auditor's earlier copy, one a witness
   cosigned, the trusted one) must be a prefix of this log: the root the records give at its size when they are
   there; else (retention deleted them) a consistency proof (RFC 9162 §2.1.4) from the tiles to the newest
   checkpoint of the store. Otherwise ``fork``: the log was rewritten after that checkpoint was seen, even if it
   was re-signed with the real key, or it was rolled back to before it.
3. *Tiles*: the tiles' root at each checkpoint size must be that checkpoint's root (``bad-tiles``): proofs for
   auditors come from the tiles.

A walk starting past seq 0 (a trusted checkpoint, records expired) takes the tree's frontier at that seq from the
tiles: a wrong one cannot lead to a signed root.

Shortcuts, each exact: a whole tile of records advances the frontier by its root (RFC 9162 §2.1.1: appending the
root of a complete aligned subtree gives the frontier appending its leaves gives); the link check takes the root of
a level-0 tile the records' leaf hashes were found equal to from the walk; and when no tile disagreed and every
level links up, the tiles describe the records' tree (and, past a trusted start, the frontier it began from), so
the tiles' root at a walked checkpoint size is the root the walk computed there. Anything else is computed from
the tiles as it always was.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint as cp
from audit import merkle
from audit.merkle import HASH_SIZE, Frontier, ProofError
from audit.tiles import HEIGHT, WIDTH, TileError, TileReader
from audit.verify import Finding


@dataclass(frozen=True)
class TreeNote:
    size: int
    root: bytes
    source: str  # "store", or where an outside checkpoint came from
    walked: bool = False  # the chain walk already requires its records (the trusted checkpoint)


def tree_notes(texts: Iterable[str], chain_id: str, key: Ed25519PublicKey, source: str,
               walked: bool = False) -> list[TreeNote]:
    """The tree checkpoints of ``chain_id`` signed by ``key`` among ``texts`` (others are the chain walk's)."""
    out = []
    for text in dict.fromkeys(texts):
        try:
            note = cp.parse(text)
        except (cp.CheckpointError, UnicodeError):
            continue
        if note.origin == cp.origin_for(chain_id) and note.size > 0 and cp.is_tree(note, key):
            out.append(TreeNote(note.size, note.root, source, walked))
    return out


class TreeWalk:
    """Feed the stored records in seq order from ``begin`` (``add`` per record, ``add_run`` per intact run), then
    ``finish`` for the findings."""

    def __init__(self, begin: int, notes: list[TreeNote], tiles: TileReader | None) -> None:
        self.notes, self.tiles, self.begin = notes, tiles, begin
        self.findings: list[Finding] = []
        self.wanted: dict[int, list[TreeNote]] = {}
        for note in notes:
            if note.size > begin:
                self.wanted.setdefault(note.size, []).append(note)
        self.sizes = tuple(sorted(self.wanted))
        self.tree: Frontier | None = Frontier()
        self.broken = False
        self.tile_problem = False
        self.pending = bytearray()  # leaf hashes walked since the last tile boundary
        self.roots: dict[int, bytes] = {}  # the records' root at each size in ``wanted`` walked
        self.known: dict[int, bytes] = {}  # roots of full level-0 tiles found equal to the records' leaf hashes
        try:
            self.tiles_size = tiles.size() if tiles is not None else 0
        except TileError as exc:
            self.tiles_size = 0
            self._tile_problem(None, str(exc))
        if begin:
            try:
                self.tree = merkle.frontier_at(self._sub(), begin)
            except TileError as exc:
                self.tree = None
                if self.wanted:
                    self.findings.append(Finding("checkpoint-mismatch", begin, f"tree checkpoints past seq {begin} "
                                                 f"cannot be recomputed: the tiles lack the tree before it ({exc})"))

    def _sub(self) -> merkle.Subtrees:
        if self.tiles is None:
            raise TileError("no tiles are stored with these records")
        return self.tiles.subtree

    def add(self, seq: int, line: bytes) -> None:
        tree = self.tree
        if tree is None or self.broken or seq < tree.size:
            return  # a duplicate or misplaced copy: the chain walk reports it
        if seq > tree.size:
            self.broken = True  # records missing: the chain walk reports them; no root past here can be computed
            return
        leaf = sha256(b"\x00" + line).digest()  # merkle.leaf_hash, inlined: this runs once per record
        self.pending += leaf
        tree.append(leaf)
        if tree.size % WIDTH == 0:
            self._against_tiles()
        if tree.size in self.wanted:
            self._check(tree.size, tree.root())

    def add_run(self, first: int, leaves: bytes, groups: bytes, pieces: dict[int, bytes]) -> None:
        """The records ``first``, ``first + 1``... given by their leaf hashes and subtree roots (merkle.leaf_run,
        computed by verify's workers): the same as ``add`` for each, but a whole tile's worth of records costs one
        frontier step, and a checkpoint's root a few hashes."""
        tree = self.tree
        if tree is None or self.broken or first + len(leaves) // HASH_SIZE <= tree.size:
            return
        if first > tree.size:
            self.broken = True
            return
        end, group0 = first + len(leaves) // HASH_SIZE, -(-first // WIDTH)
        while tree.size < end:
            pos = tree.size
            j = pos // WIDTH - group0
            at = (pos - first) * HASH_SIZE
            if pos % WIDTH == 0 and pos + WIDTH <= end and 0 <= j and (j + 1) * HASH_SIZE <= len(groups):
                root = groups[j * HASH_SIZE:(j + 1) * HASH_SIZE]
                for size in self.sizes[bisect_right(self.sizes, pos):bisect_left(self.sizes, pos + WIDTH)]:
                    part = pieces.get(size) or _pieces_of(leaves[at:(size - first) * HASH_SIZE])
                    self._check(size, _root_with(tree, size - pos, part))
                self.pending += leaves[at:at + WIDTH * HASH_SIZE]
                tree.append_subtree(HEIGHT, root)
                self._against_tiles(root)
            else:
                following = self.sizes[bisect_right(self.sizes, pos):bisect_right(self.sizes, pos) + 1]
                stop = min(pos - pos % WIDTH + WIDTH, end, *following)
                self._append_leaves(leaves[at:(stop - first) * HASH_SIZE])
                if tree.size % WIDTH == 0:
                    self._against_tiles()
            if tree.size in self.wanted:
                self._check(tree.size, tree.root())

    def _append_leaves(self, blob: bytes) -> None:
        """Leaf hashes onto the frontier as the complete aligned subtrees they form (fewer Python steps than one by
        one, same frontier)."""
        assert self.tree is not None
        tree, done = self.tree, 0
        self.pending += blob
        count = len(blob) // HASH_SIZE
        while done < count:
            level = (count - done).bit_length() - 1
            if tree.size:
                level = min(level, (tree.size & -tree.size).bit_length() - 1)
            block = blob[done * HASH_SIZE:(done + (1 << level)) * HASH_SIZE]
            tree.append_subtree(level, merkle.aligned_levels(_split(block), level)[level][0])
            done += 1 << level

    def _check(self, size: int, root: bytes) -> None:
        self.roots[size] = root
        for note in self.wanted[size]:
            if root != note.root:
                self.findings.append(self._disagrees(note))

    def _against_tiles(self, root: bytes | None = None) -> None:
        """The level-0 tile must hold the leaf hashes of the records just walked (``pending``, at most one tile's
        worth, ending at the tree's size); the first disagreement is reported, once. ``root``: of those leaves,
        when they are a whole tile; kept (``known``) when the tile holds them, so the link check need not hash it
        again."""
        pending, self.pending = self.pending, bytearray()
        if self.tiles is None or self.tile_problem or self.tree is None or not pending:
            return
        first = self.tree.size - len(pending) // HASH_SIZE
        index, offset = divmod(first, WIDTH)
        end = min(self.tree.size, self.tiles_size)
        if end <= first:
            return
        try:
            data = self.tiles.tile(0, index, end - index * WIDTH)
        except TileError as exc:
            self._tile_problem(first, str(exc))
            return
        held = data[offset * HASH_SIZE:(end - index * WIDTH) * HASH_SIZE]
        walked = pending[:(end - first) * HASH_SIZE]
        if held != walked:
            at = next(i for i in range(end - first) if held[i * HASH_SIZE:(i + 1) * HASH_SIZE]
                      != walked[i * HASH_SIZE:(i + 1) * HASH_SIZE])
            self._tile_problem(first + at, f"the tiles hold another leaf hash for record {first + at} than its "
                               "stored bytes give")
        elif root is not None and offset == 0 and end - first == WIDTH and len(data) == WIDTH * HASH_SIZE:
            self.known[index] = root

    def _tile_problem(self, seq: int | None, detail: str) -> None:
        self.tile_problem = True
        self.findings.append(Finding("bad-tiles", seq, detail))

    @staticmethod
    def _disagrees(note: TreeNote) -> Finding:
        if note.source == "store":
            return Finding("checkpoint-mismatch", note.size - 1, f"tree checkpoint of size {note.size} disagrees "
                           "with the records (history rewritten)")
        return Finding("fork", note.size - 1, f"checkpoint of size {note.size} from {note.source} is not a prefix "
                       "of this log: history rewritten after it was seen (even if re-signed with the real key)")

    def finish(self) -> list[Finding]:
        self._against_tiles()
        reached = self.tree.size if self.tree is not None else self.begin
        if not self.broken and self.tree is not None:
            for note in self.notes:
                if note.source != "store" and not note.walked and note.size > reached:
                    self.findings.append(Finding("fork", reached, f"checkpoint of size {note.size} from "
                                                 f"{note.source} is beyond the log's {reached} records: rolled back"))
        self._consistency_below(self.begin)
        self._tiles_agree()
        return self.findings

    def _consistency_below(self, begin: int) -> None:
        """Outside checkpoints older than the first record still stored: by consistency proof from the tiles."""
        old = [note for note in self.notes if note.source != "store" and note.size <= begin]
        newest = max((n for n in self.notes if n.source == "store"), key=lambda n: n.size, default=None)
        for note in old:
            if newest is None or newest.size < note.size:
                continue
            try:
                proof = merkle.consistency_proof(self._sub(), note.size, newest.size)
                merkle.verify_consistency(note.size, newest.size, proof, note.root, newest.root)
            except (ProofError, TileError) as exc:
                self.findings.append(Finding("fork", note.size - 1, f"checkpoint of size {note.size} from "
                                             f"{note.source} is not extended by the log's checkpoint of size "
                                             f"{newest.size}: {exc}"))

    def _tiles_agree(self) -> None:
        """The tiles' levels link up, and give each checkpoint's root."""
        if self.tiles is None or self.tile_problem:
            return
        size = self.tiles_size
        try:
            broken = self.tiles.broken_links(size, self.known)
        except TileError as exc:
            broken = [str(exc)]
        if broken:
            self._tile_problem(None, f"{broken[0]}: its root is not what the level above stores "
                               f"({len(broken)} tile(s))")
            return
        newest = max((note.size for note in self.notes if note.source == "store"), default=0)
        if size < newest:
            self.findings.append(Finding("bad-tiles", size, f"the tiles cover {size} records, the newest checkpoint "
                                         f"{newest}: no proofs can be made for what lies between"))
        for note in self.notes:
            if note.source != "store" or note.size > size:
                continue
            walked = self.roots.get(note.size)
            if walked is not None:
                # The records' leaves from ``begin`` to here are the level-0 tiles' (no tile problem), the frontier
                # at ``begin`` came from the tiles and every level links up: the tiles' root is the records' root.
                if walked != note.root:
                    self.findings.append(Finding("bad-tiles", note.size - 1, f"the tiles' root at size {note.size} "
                                                 "is not the checkpoint's: proofs from these tiles would fail"))
                continue
            try:
                ok = merkle.root(self.tiles.subtree, note.size) == note.root
            except TileError as exc:
                self.findings.append(Finding("bad-tiles", note.size - 1, f"tiles at size {note.size}: {exc}"))
                continue
            if not ok:
                self.findings.append(Finding("bad-tiles", note.size - 1, f"the tiles' root at size {note.size} is "
                                             "not the checkpoint's: proofs from these tiles would fail"))


def _split(blob: bytes) -> list[bytes]:
    return [blob[i:i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


def _pieces_of(blob: bytes) -> bytes:
    """merkle.pieces of leaf hashes starting a tile (when a worker did not compute them)."""
    count = len(blob) // HASH_SIZE
    return b"".join(merkle.pieces(merkle.aligned_levels(_split(blob), HEIGHT - 1), 0, count))


def _root_with(tree: Frontier, count: int, part: bytes) -> bytes:
    """The root of ``tree`` extended by ``count`` leaves (fewer than a tile) given as their ``pieces``."""
    extended = tree.copy()
    hashes = iter(_split(part))
    for level in reversed(range(HEIGHT)):
        if count >> level & 1:
            extended.append_subtree(level, next(hashes))
    return extended.root()
