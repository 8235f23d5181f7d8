"""The tree checkpoints checked from the workers' leaf hashes (``TreeWalk.add_run``, the tiles' link check reusing
the roots of level-0 tiles found equal to the records) give exactly the findings of the walk over every stored line
(``TreeWalk.add``, every tile hashed again): on intact chains, and on every forged store that would slip past one
of the shortcuts if it were wrong. Each case asserts its one finding, fast path and per-line path alike."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from audit import checkpoint as cp
from audit import merkle, verify_cli
from audit.canonical import loads
from audit.readers import localstore as reader
from audit.sinks import localstore
from audit.tiles import HEIGHT, WIDTH, TileReader, TileWriter
from audit.treeverify import TreeNote, TreeWalk
from audit.verify import Report
from audit.verify_cli import Known, verify_store
from tests.audit.kit import keys, ship_once, write_journal
from tests.audit.tamper import resealed

CHAIN = "h1"
RECORDS = 700  # two full level-0 tiles and a partial one; tree checkpoints every 100 (inside tiles)
CHUNKS = [3_000, 150_000]  # chunk boundaries inside tiles: runs of a few records, and runs holding whole tiles


def per_line_feed(walk: TreeWalk, lay: reader.Layout, chunks: Iterable[reader.Chunk]) -> Iterator[reader.Chunk]:
    """The walk before the workers computed leaf hashes: every stored line read again in seq order, and (roots of
    the walk forgotten) every tile hashed again by the link check and the tiles' roots."""
    yield from chunks
    for seq, line in reader.seq_lines(lay, walk.begin):
        walk.add(seq, line)
    walk.roots.clear()


class Store:
    """A chain shipped by the real shipper into a local store, and the attacker's handles on it."""

    def __init__(self, tmp: Path, records: int = RECORDS) -> None:
        self.tmp = tmp
        self.key_file, public_file = keys(tmp / "keys")
        self.key = cp.load_private(self.key_file)
        self.public = cp.load_public(public_file)
        journal = tmp / "journal.jsonl"
        write_journal(journal, records)
        self.store = tmp / "store"
        assert ship_once([journal], self.key_file, tmp / "spool", store=self.store, every=100) == 0
        self.dir = self.store / CHAIN

    def both(self, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int, trusted: cp.Checkpoint | None = None,
             known: tuple[Known, ...] = ()) -> tuple[Report, Report]:
        """The report with the leaf hashes from the workers, and with the walk over every line."""
        fast = verify_store(self.store, CHAIN, self.public, trusted, workers=2, chunk_bytes=chunk_bytes,
                            known=known)
        with monkeypatch.context() as patch:
            patch.setattr(verify_cli, "feed_tree", per_line_feed)
            slow = verify_store(self.store, CHAIN, self.public, trusted, workers=2, chunk_bytes=chunk_bytes,
                                known=known)
        return fast, slow

    def lines(self) -> list[bytes]:
        return list(localstore.read_lines(self.dir))

    def note(self, size: int) -> str:
        return (self.dir / "checkpoints" / f"{size:020d}.note").read_text()

    def rewrite(self, seq: int, tiles: bool, resign: bool) -> list[bytes]:
        """Record ``seq`` edited and the chain re-sealed from it; the tiles rebuilt from the new records (``tiles``)
        and every checkpoint from it on re-signed with the real key (``resign``): the host gone bad."""
        out = resealed(self.lines(), CHAIN, seq)
        (segment,) = localstore.segments(self.dir)
        segment.write_bytes(b"".join(line + b"\n" for line in out))
        if tiles:
            shutil.rmtree(self.dir / "tile")
            writer = TileWriter(self.dir)
            writer.append(merkle.leaf_hash(line) for line in out)
            writer.flush()
        if resign:
            tree = merkle.MemoryTree([merkle.leaf_hash(line) for line in out])
            for path in (self.dir / "checkpoints").glob("*.note"):
                size = cp.parse(path.read_text()).size
                if size > seq:
                    path.write_text(cp.sign_tree(self.key, CHAIN, size, merkle.root(tree.subtree, size),
                                                 loads(out[size - 1]).value["chain"]["hash"]))
        return out

    def set_leaf(self, seq: int, leaf: bytes) -> None:
        """The leaf hash of ``seq`` in the level-0 tile (full or the newest partial) replaced by ``leaf``."""
        index, offset = divmod(seq, WIDTH)
        full = self.dir / "tile" / "0" / f"{index:03d}"
        path = full if full.exists() else max((self.dir / "tile" / "0" / f"{index:03d}.p").iterdir(),
                                              key=lambda p: int(p.name))
        data = bytearray(path.read_bytes())
        data[offset * 32:(offset + 1) * 32] = leaf
        path.write_bytes(bytes(data))


def kinds(report: Report) -> list[tuple[str, int | None]]:
    return [(f.kind, f.seq) for f in report.findings]


def same(fast: Report, slow: Report) -> list[tuple[str, int | None]]:
    assert fast.as_dict() == slow.as_dict()
    return kinds(fast)


@pytest.fixture
def chain(tmp_path: Path) -> Store:
    return Store(tmp_path)


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_intact_chain_has_no_tree_findings(chain: Store, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == [] and fast.intact and fast.records == RECORDS


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_level_1_tile_alone_modified_is_bad_tiles(chain: Store, monkeypatch: pytest.MonkeyPatch,
                                                  chunk_bytes: int) -> None:
    """The level-0 tiles equal the records: their roots come from the workers; the level above must still match."""
    path = chain.dir / "tile/1/000.p/2"
    path.write_bytes(path.read_bytes()[:32] + bytes(32))
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == [("bad-tiles", None)]
    assert fast.findings[0].detail.startswith("tile/0/001: its root is not what the level above stores (1 tile")


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_record_and_its_leaf_tile_rewritten_with_the_key_but_not_the_level_above_is_bad_tiles(
        chain: Store, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    """The host re-seals record 300 onwards and re-signs every checkpoint, and makes the level-0 tiles hold the new
    leaves, but leaves level 1 as it was: the records agree with the checkpoints and with the leaf tiles, so only
    the link between the levels can tell, and it must (proofs through level 1 would fail)."""
    out = chain.rewrite(300, tiles=False, resign=True)
    for seq in range(300, RECORDS):
        chain.set_leaf(seq, merkle.leaf_hash(out[seq]))
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == [("bad-tiles", None)]
    assert fast.findings[0].detail.startswith("tile/0/001: its root is not what the level above stores")


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_leaf_tile_matching_a_record_rewritten_without_the_key_is_a_checkpoint_mismatch(
        chain: Store, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    """Without the key: record 300 re-sealed (chain links hold) and its leaf in the tile made to match; the signed
    checkpoints still hold the old roots and head lines, and level 1 of the tiles the old leaves' roots."""
    out = chain.rewrite(300, tiles=False, resign=False)
    for seq in range(300, RECORDS):
        chain.set_leaf(seq, merkle.leaf_hash(out[seq]))
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == [("checkpoint-mismatch", s - 1) for s in (400, 500, 600, 700)] + [("bad-tiles", None)]


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_history_rewritten_with_all_tiles_and_resigned_is_a_fork_against_a_known_checkpoint(
        chain: Store, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    """Every chunk is intact, every tile agrees, every checkpoint in the store is signed by the real key: only the
    checkpoint an auditor kept from before says the log was rewritten."""
    kept = chain.note(500)
    chain.rewrite(300, tiles=True, resign=True)
    assert verify_store(chain.store, CHAIN, chain.public, None, workers=2, chunk_bytes=chunk_bytes).intact
    fast, slow = chain.both(monkeypatch, chunk_bytes, known=(Known("the auditor's copy", kept),))
    assert same(fast, slow) == [("fork", 499)]


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_leaf_hash_changed_at_a_chunk_boundary_inside_a_tile_is_bad_tiles(
        chain: Store, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    lay = reader.layout(chain.store, CHAIN)
    ends, seq = [], 0
    for _, start, end in reader.ranges(lay, chunk_bytes):
        seq += len(reader.read_range(lay.segments[0].path, start, end))
        ends.append(seq)
    boundary = next(s for s in ends if s % WIDTH)  # the first record of a chunk that starts inside a tile
    chain.set_leaf(boundary, bytes(32))
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == [("bad-tiles", boundary)]


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_tiles_shorter_than_the_records_are_bad_tiles(chain: Store, monkeypatch: pytest.MonkeyPatch,
                                                      chunk_bytes: int) -> None:
    (chain.dir / "tile" / "tree-size").write_text("300\n")
    shutil.rmtree(chain.dir / "tile/0/002.p")
    shutil.rmtree(chain.dir / "tile/1/000.p")
    writer = TileWriter(chain.dir)
    writer.append(merkle.leaf_hash(line) for line in chain.lines()[:300])
    writer.flush()
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == [("bad-tiles", 300)]
    assert "the tiles cover 300 records, the newest checkpoint 700" in fast.findings[0].detail


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
@pytest.mark.parametrize("damage", ["none", "leaf after the start", "level 1 after the start",
                                    "level 1 before the start", "record after the start"])
def test_from_a_trusted_checkpoint_inside_a_tile(chain: Store, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int,
                                                 damage: str) -> None:
    """The walk starts at seq 299 with the frontier from the tiles (level 1's first hash, tile 1's first 43
    leaves); the first run starts inside a tile."""
    trusted = cp.parse(chain.note(300))
    expected: list[tuple[str, int | None]] = []
    level1 = chain.dir / "tile/1/000.p/2"
    if damage == "leaf after the start":
        chain.set_leaf(450, bytes(32))
        expected = [("bad-tiles", 450)]
    elif damage == "level 1 after the start":  # the root of tile 1, which the walk computes from the records
        level1.write_bytes(level1.read_bytes()[:32] + bytes(32))
        expected = [("bad-tiles", None)]
    elif damage == "record after the start":  # the in-order fast path gives up there; the walk takes the rest
        lines = chain.lines()
        lines[450] = lines[450].replace(b"domain vm-", b"domain VM-")
        (segment,) = localstore.segments(chain.dir)
        segment.write_bytes(b"".join(line + b"\n" for line in lines))
        expected = [("modified", 450)]
    elif damage == "level 1 before the start":  # the frontier the walk starts from: no root past it comes out
        level1.write_bytes(bytes(32) + level1.read_bytes()[32:])
        expected = [("checkpoint-mismatch", 299), ("fork", 299), ("checkpoint-mismatch", 399),
                    ("checkpoint-mismatch", 499), ("checkpoint-mismatch", 599), ("checkpoint-mismatch", 699),
                    ("bad-tiles", None)]
    fast, slow = chain.both(monkeypatch, chunk_bytes, trusted=trusted)
    assert same(fast, slow) == expected


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
@pytest.mark.parametrize("where", ["duplicate", "misplaced"])
def test_duplicate_or_misplaced_record_is_found_once(chain: Store, monkeypatch: pytest.MonkeyPatch,
                                                     chunk_bytes: int, where: str) -> None:
    """Copies of genuine records in the stored lines: the walk takes each seq once, so the tree is intact."""
    lines = chain.lines()
    if where == "duplicate":
        lines.insert(301, lines[300])
        expected = [("duplicate", 300)]
    else:
        lines.insert(520, lines[260])
        expected = [("duplicate", 260)]
    (segment,) = localstore.segments(chain.dir)
    segment.write_bytes(b"".join(line + b"\n" for line in lines))
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == expected


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_modified_records_are_found_without_tree_findings(chain: Store, monkeypatch: pytest.MonkeyPatch,
                                                          chunk_bytes: int) -> None:
    """The tree findings a modified record causes (its leaf, every later root) are the record's finding."""
    lines = chain.lines()
    for seq in (40, 333):
        lines[seq] = lines[seq].replace(b"domain vm-", b"domain VM-")
    (segment,) = localstore.segments(chain.dir)
    segment.write_bytes(b"".join(line + b"\n" for line in lines))
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == [("modified", 40), ("modified", 333)]


# -- the walk itself: runs of leaf hashes against the walk of one record at a time ------------------------------

def _notes(leaves: list[bytes], sizes: list[int], wrong: set[int]) -> list[TreeNote]:
    tree = merkle.MemoryTree(leaves)
    return [TreeNote(s, bytes(32) if s in wrong else merkle.root(tree.subtree, s), "store") for s in sizes]


@pytest.mark.parametrize("seed", range(6))
def test_runs_give_the_walk_of_single_records(tmp_path: Path, seed: int) -> None:
    """Random run lengths and starts (inside tiles, at tile boundaries, overlapping what was walked, leaving a
    gap), checkpoint sizes anywhere, some roots wrong, some tile leaves wrong: same findings and roots."""
    rng = random.Random(seed)
    n = rng.randrange(300, 1400)
    data = [b"record %d" % i for i in range(n)]
    leaves = [merkle.leaf_hash(d) for d in data]
    writer = TileWriter(tmp_path)
    writer.append(leaves[:n - rng.randrange(0, 40)])
    writer.flush()
    if seed % 2:
        tile = tmp_path / "tile/0/001"
        if tile.exists():
            tile.write_bytes(tile.read_bytes()[:64] + bytes(32) + tile.read_bytes()[96:])
    sizes = sorted(set(rng.sample(range(1, n + 1), 12)) | {s for s in (WIDTH, 2 * WIDTH) if s <= n})
    notes = _notes(leaves, sizes, set(rng.sample(sizes, 2)))
    begin = rng.choice([0, 0, 37, 256, 300])
    one, runs = TreeWalk(begin, notes, TileReader(tmp_path)), TreeWalk(begin, notes, TileReader(tmp_path))
    for seq in range(begin, n):
        one.add(seq, data[seq])
    seq = begin
    while seq < n:
        count = rng.choice([1, 5, 255, 256, 300, 700])
        start = max(0, seq - rng.choice([0, 0, 0, 3]))  # sometimes re-sending records already walked
        part = data[start:start + count]
        blob, groups, pieces = merkle.leaf_run(start, part, runs.sizes, HEIGHT)
        runs.add_run(start, blob, groups, pieces if rng.random() < 0.7 else {})
        seq = start + len(part)
    assert runs.roots == one.roots
    assert [(f.kind, f.seq, f.detail) for f in runs.finish()] == [(f.kind, f.seq, f.detail) for f in one.finish()]


def test_a_run_past_a_gap_stops_the_walk_like_a_missing_record(tmp_path: Path) -> None:
    data = [b"r%d" % i for i in range(600)]
    leaves = [merkle.leaf_hash(d) for d in data]
    notes = _notes(leaves, [100, 500], set())
    one, runs = TreeWalk(0, notes, None), TreeWalk(0, notes, None)
    for seq in [*range(200), *range(201, 600)]:
        one.add(seq, data[seq])
    for start, end in [(0, 200), (201, 600)]:
        runs.add_run(start, *merkle.leaf_run(start, data[start:end], runs.sizes, HEIGHT))
    assert runs.broken and one.broken and runs.tree is not None and one.tree is not None
    assert runs.tree.size == one.tree.size == 200
    assert runs.roots == one.roots == {100: merkle.root(merkle.MemoryTree(leaves).subtree, 100)}


def test_frontier_takes_a_subtree_like_its_leaves() -> None:
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(1000)]
    whole = merkle.Frontier()
    for leaf in leaves:
        whole.append(leaf)
    parts = merkle.Frontier()
    for leaf in leaves[:512]:
        parts.append(leaf)
    parts.append_subtree(8, merkle.MemoryTree(leaves[512:768]).subtree(8, 0))
    parts.append_subtree(7, merkle.root(merkle.MemoryTree(leaves[768:896]).subtree, 128))
    for leaf in leaves[896:]:
        parts.append(leaf)
    assert (parts.size, parts.hashes, parts.root()) == (whole.size, whole.hashes, whole.root())
    with pytest.raises(ValueError, match="cannot start at leaf 1000"):
        parts.append_subtree(4, bytes(32))


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_checkpoint_signed_with_a_wrong_root_is_a_mismatch_and_bad_tiles(chain: Store, monkeypatch: pytest.MonkeyPatch,
                                                                         chunk_bytes: int) -> None:
    """The host signs a note whose root is neither the records' nor the tiles' (its head line is right): the walk's
    root, reused for the tiles' root, must not hide that the tiles disagree with it too."""
    head = cp.parse(chain.note(500)).head
    assert head is not None
    forged = cp.sign_tree(chain.key, CHAIN, 500, bytes(32), head.hex())
    (chain.dir / "checkpoints" / f"{500:020d}.note").write_text(forged)
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == [("bad-tiles", 499), ("checkpoint-mismatch", 499)]


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_tiles_longer_than_the_records_left(chain: Store, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    """The last 150 records and the checkpoints past 550 deleted: the tiles still describe 700 records."""
    (segment,) = localstore.segments(chain.dir)
    segment.write_bytes(b"".join(line + b"\n" for line in chain.lines()[:550]))
    for size in (600, 700):
        (chain.dir / "checkpoints" / f"{size:020d}.note").unlink()
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == []


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_partial_tile_wider_than_a_tile_is_bad_tiles_not_a_crash(chain: Store, monkeypatch: pytest.MonkeyPatch,
                                                                  chunk_bytes: int) -> None:
    """C2SP partial tiles are 1 to 255 hashes wide. A full tile replaced by a ``.p/257`` holding its 256 hashes and
    one more was read as that tile, then hashed as 257 leaves (IndexError: a traceback, no report)."""
    full = chain.dir / "tile/0/000"
    data = full.read_bytes()
    full.unlink()
    (chain.dir / "tile/0/000.p").mkdir()
    (chain.dir / "tile/0/000.p/257").write_bytes(data + data[:32])
    fast, slow = chain.both(monkeypatch, chunk_bytes)
    assert same(fast, slow) == [("bad-tiles", 0)]
    assert fast.findings[0].detail == "no tile tile/0/000 with 256 hashes"


def test_only_the_chunks_that_are_not_intact_are_read_again_for_the_tree(chain: Store,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the workers' leaf hashes: an intact chain's lines are read once; one modified record costs the
    one chunk holding it."""
    read_again: list[int] = []
    real = reader.seqs_of

    def counted(lines: Iterable[bytes], chain_json: bytes, first: int) -> Iterator[tuple[int, bytes]]:
        read_again.append(first)
        return real(lines, chain_json, first)

    monkeypatch.setattr(reader, "seqs_of", counted)
    assert verify_store(chain.store, CHAIN, chain.public, None, workers=2, chunk_bytes=3_000).intact
    assert read_again == []
    lines = chain.lines()
    lines[333] = lines[333].replace(b"domain vm-", b"domain VM-")
    (segment,) = localstore.segments(chain.dir)
    segment.write_bytes(b"".join(line + b"\n" for line in lines))
    report = verify_store(chain.store, CHAIN, chain.public, None, workers=2, chunk_bytes=3_000)
    assert kinds(report) == [("modified", 333)] and len(read_again) == 1
