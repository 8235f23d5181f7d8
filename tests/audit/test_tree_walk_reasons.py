"""The tree walk (audit/treeverify.py ``TreeWalk``) on trees built in memory: each finding named by kind, seq and
detail, and the roots it computed, for the walk of one record at a time (``add``) AND for the walk of runs of leaf
hashes (``add_run``, what verify's workers send for intact chunks), compared with each other and with what this
file states, so that a change that broke both walks alike would still fail here.

tests/audit/test_tree_fast.py proves the same on stores the real shipper wrote. Here the records are short byte
strings (the walk hashes a record's stored bytes and nothing else), the tiles are written by the real
``TileWriter`` into a temporary directory and read by the real ``TileReader``, and the checkpoints are
``TreeNote``s (``tree_notes`` turns signed notes into them: tested at the end). 600 records: two full level-0
tiles and a partial one, so that tile boundaries, runs inside, across and over whole tiles, checkpoint sizes inside
a tile and a start inside a tile are all a few hundred SHA-256 hashes: cheap enough for mutation testing
(docs/testing.md) to run for every mutant.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint as cp
from audit import merkle
from audit.tiles import HEIGHT, WIDTH, TileReader, TileWriter
from audit.treeverify import TreeNote, TreeWalk, tree_notes
from audit.verify import Finding

N = 600
DATA = [b"record %d" % i for i in range(N)]
LEAVES = [merkle.leaf_hash(d) for d in DATA]
TREE = merkle.MemoryTree(LEAVES)
SIZES = [1, 100, 255, 256, 257, 300, 511, 512, 513, 600]
# Runs as verify's workers would send them: inside a tile, across a boundary, a whole tile with checkpoint sizes
# inside it (255, 300, 511 in 256..512), ending on a boundary, starting on one, the partial tile at the end.
RUNS = [(0, 90), (90, 250), (250, 256), (256, 512), (512, 530), (530, 600)]
WHOLE = [(0, 600)]
SHORT = [(0, 3), (3, 260), (260, 261), (261, 599), (599, 600)]

REWRITTEN = "tree checkpoint of size {} disagrees with the records (history rewritten)"
NOT_PREFIX = ("checkpoint of size {} from {} is not a prefix of this log: history rewritten after it was seen (even "
              "if re-signed with the real key)")
ROLLED_BACK = "checkpoint of size {} from {} is beyond the log's {} records: rolled back"
OTHER_LEAF = "the tiles hold another leaf hash for record {} than its stored bytes give"
TILES_ROOT = "the tiles' root at size {} is not the checkpoint's: proofs from these tiles would fail"
AUDITOR = "the auditor's copy"

Found = list[tuple[str, int | None, str]]


def root(size: int) -> bytes:
    return merkle.root(TREE.subtree, size)


def store(*sizes: int, wrong: Sequence[int] = ()) -> list[TreeNote]:
    return [TreeNote(s, bytes(32) if s in wrong else root(s), "store") for s in sizes]


def outside(size: int, wrong: bool = False, walked: bool = False, source: str = AUDITOR) -> TreeNote:
    return TreeNote(size, bytes(32) if wrong else root(size), source, walked)


def tiles(directory: Path, count: int = N) -> TileReader:
    writer = TileWriter(directory)
    writer.append(LEAVES[:count])
    writer.flush()
    return TileReader(directory)


def set_leaf(directory: Path, seq: int, leaf: bytes = bytes(32)) -> None:
    """The leaf hash of ``seq`` in its level-0 tile (full, or the widest partial one) replaced."""
    index, offset = divmod(seq, WIDTH)
    full = directory / "tile" / "0" / f"{index:03d}"
    path = full if full.exists() else max((directory / "tile" / "0" / f"{index:03d}.p").iterdir(),
                                          key=lambda p: int(p.name))
    data = bytearray(path.read_bytes())
    data[offset * 32:(offset + 1) * 32] = leaf
    path.write_bytes(bytes(data))


def by_line(begin: int, notes: list[TreeNote], reader: TileReader | None, seqs: Sequence[int]) -> TreeWalk:
    walk = TreeWalk(begin, notes, reader)
    for seq in seqs:
        walk.add(seq, DATA[seq])
    return walk


def by_run(begin: int, notes: list[TreeNote], reader: TileReader | None, runs: Sequence[tuple[int, int]],
           with_pieces: bool = True) -> TreeWalk:
    walk = TreeWalk(begin, notes, reader)
    for first, end in runs:
        leaves, groups, pieces = merkle.leaf_run(first, DATA[first:end], walk.sizes, HEIGHT)
        walk.add_run(first, leaves, groups, pieces if with_pieces else {})
    return walk


def detailed(findings: list[Finding]) -> Found:
    return [(f.kind, f.seq, f.detail) for f in findings]


def walks(make: object, begin: int, notes: list[TreeNote], seqs: Sequence[int] | None = None,
          runs: Sequence[Sequence[tuple[int, int]]] = (RUNS, WHOLE, SHORT)) -> list[tuple[Found, dict[int, bytes]]]:
    """Findings and roots of the walk by line and of the walks by runs (with and without the workers' pieces),
    each over a fresh reader from ``make`` (a TileReader factory, or None)."""
    reader = (lambda: make()) if callable(make) else (lambda: None)
    seqs = range(begin, N) if seqs is None else seqs
    done = [by_line(begin, notes, reader(), seqs)]
    done += [by_run(begin, notes, reader(), r, p) for r in runs for p in (True, False)]
    return [(detailed(w.finish()), dict(w.roots)) for w in done]


def roots_of(*sizes: int) -> dict[int, bytes]:
    return {s: root(s) for s in sizes}


@pytest.fixture
def tiled(tmp_path: Path) -> Path:
    tiles(tmp_path)
    return tmp_path


def test_intact_tree_has_no_findings_and_every_root_is_the_records(tiled: Path) -> None:
    for found, roots in walks(lambda: TileReader(tiled), 0, store(*SIZES)):
        assert (found, roots) == ([], roots_of(*SIZES))


def test_whole_tiles_walked_in_runs_are_known_to_the_link_check(tiled: Path) -> None:
    """A level-0 tile whose 256 hashes equal the records' leaves: its root (from the worker) spares the link check
    hashing it again. Only such tiles: the partial one, and tiles walked one record at a time, are not known."""
    walk = by_run(0, store(600), TileReader(tiled), WHOLE)
    assert walk.finish() == [] and walk.known == {0: TREE.subtree(HEIGHT, 0), 1: TREE.subtree(HEIGHT, 1)}
    walk = by_run(0, store(600), TileReader(tiled), [(0, 300), (300, 600)])  # tile 1 not whole in one run
    assert walk.finish() == [] and walk.known == {0: TREE.subtree(HEIGHT, 0)}
    walk = by_run(0, store(600), TileReader(tiled), RUNS)  # tile 0 in three runs
    assert walk.finish() == [] and walk.known == {1: TREE.subtree(HEIGHT, 1)}
    walk = by_line(0, store(600), TileReader(tiled), range(N))
    assert walk.finish() == [] and walk.known == {}


def test_tile_that_disagrees_is_not_known(tiled: Path) -> None:
    set_leaf(tiled, 300)
    walk = by_run(0, store(600), TileReader(tiled), WHOLE)
    assert detailed(walk.finish()) == [("bad-tiles", 300, OTHER_LEAF.format(300))]
    assert walk.known == {0: TREE.subtree(HEIGHT, 0)}


@pytest.mark.parametrize("size", [1, 100, 256, 300, 512, 600])
def test_store_checkpoint_with_another_root_is_a_mismatch_and_bad_tiles(tiled: Path, size: int) -> None:
    """Signed by the key with a root neither the records nor the tiles give: the walk's root, reused as the
    tiles' root, must not hide that the tiles disagree with the checkpoint too."""
    expected = [("checkpoint-mismatch", size - 1, REWRITTEN.format(size)), ("bad-tiles", size - 1,
                                                                        TILES_ROOT.format(size))]
    for found, roots in walks(lambda: TileReader(tiled), 0, store(*SIZES, wrong=[size])):
        assert (found, roots) == (expected, roots_of(*SIZES))


def test_two_store_checkpoints_of_one_size_each_judged(tiled: Path) -> None:
    notes = [*store(300), *store(300, wrong=[300])]
    for found, _ in walks(lambda: TileReader(tiled), 0, notes):
        assert found == [("checkpoint-mismatch", 299, REWRITTEN.format(300)), ("bad-tiles", 299,
                                                                              TILES_ROOT.format(300))]


@pytest.mark.parametrize("size", [100, 300, 600])
def test_outside_checkpoint_that_is_not_a_prefix_is_a_fork(tiled: Path, size: int) -> None:
    for found, _ in walks(lambda: TileReader(tiled), 0, [*store(600), outside(size, wrong=True)]):
        assert found == [("fork", size - 1, NOT_PREFIX.format(size, AUDITOR))]


def test_outside_checkpoint_that_is_a_prefix_is_no_finding(tiled: Path) -> None:
    for found, roots in walks(lambda: TileReader(tiled), 0, [*store(600), outside(300), outside(600)]):
        assert (found, roots) == ([], roots_of(300, 600))


def test_outside_checkpoint_beyond_the_records_is_a_rollback(tiled: Path) -> None:
    bigger = TreeNote(650, bytes(32), AUDITOR)
    for found, _ in walks(lambda: TileReader(tiled), 0, [*store(600), bigger]):
        assert found == [("fork", 600, ROLLED_BACK.format(650, AUDITOR, 600))]


def test_outside_checkpoint_beyond_the_records_walked_or_signed_by_the_store_is_no_rollback(tiled: Path) -> None:
    """The trusted checkpoint (``walked``) past the records: the chain walk reports those missing. A store
    checkpoint past them: the chain walk reports them missing too (tail truncated)."""
    trusted = TreeNote(650, bytes(32), "the trusted checkpoint", walked=True)
    for found, _ in walks(lambda: TileReader(tiled), 0, [*store(600), trusted]):
        assert found == []
    for found, _ in walks(lambda: TileReader(tiled), 0, store(300), seqs=range(250)):
        assert found == []


def test_rollback_is_judged_only_when_the_walk_reached_the_end(tiled: Path) -> None:
    """A gap in the records stops the walk: where the log ends is then unknown to it (the chain walk reports the
    gap), so no rollback is claimed; the roots before the gap are still checked."""
    seqs = [*range(400), *range(401, N)]
    runs = [[(0, 400), (401, 600)], [(0, 256), (256, 400), (450, 600)]]
    for found, roots in walks(lambda: TileReader(tiled), 0, [*store(300, 600), TreeNote(650, bytes(32), AUDITOR)],
                              seqs, runs):
        assert (found, roots) == ([], roots_of(300))


def test_records_after_a_gap_never_resume_the_walk(tiled: Path) -> None:
    """Record 200 missing where it belongs, then stored later with its neighbours (misplaced copies: the chain
    walk reports them): past the gap no root is computed, whatever comes after."""
    seqs = [*range(200), *range(201, N), *range(195, 260)]
    runs = [[(0, 200), (201, 600), (195, 260)], [(0, 200), (201, 260), (195, 600)]]
    for found, roots in walks(lambda: TileReader(tiled), 0, store(100, 250, 600), seqs, runs):
        assert (found, roots) == ([], roots_of(100))


def test_records_again_or_overlapping_runs_change_nothing(tiled: Path) -> None:
    """Copies of records already walked (a duplicate, a misplaced copy: the chain walk reports them) are skipped;
    a run that begins before the walk's end goes on from there."""
    seqs = [*range(300), 10, 299, *range(300, N), 5]
    runs = [(0, 300), (0, 100), (250, 260), (200, 520), (500, 600), (0, 600)]
    for found, roots in walks(lambda: TileReader(tiled), 0, store(*SIZES), seqs, [runs]):
        assert (found, roots) == ([], roots_of(*SIZES))


# --- the tiles against the records ------------------------------------------------------------------------------

@pytest.mark.parametrize("seq", [0, 255, 256, 300, 511, 512, 599])
def test_leaf_tile_that_disagrees_with_a_record_is_bad_tiles_at_that_record(tiled: Path, seq: int) -> None:
    set_leaf(tiled, seq)
    for found, roots in walks(lambda: TileReader(tiled), 0, store(*SIZES)):
        assert (found, roots) == ([("bad-tiles", seq, OTHER_LEAF.format(seq))], roots_of(*SIZES))


def test_only_the_first_disagreement_is_reported(tiled: Path) -> None:
    for seq in (260, 270, 520):
        set_leaf(tiled, seq)
    for found, _ in walks(lambda: TileReader(tiled), 0, store(600)):
        assert found == [("bad-tiles", 260, OTHER_LEAF.format(260))]


def test_level_1_tile_that_disagrees_is_bad_tiles(tiled: Path) -> None:
    path = tiled / "tile/1/000.p/2"
    path.write_bytes(path.read_bytes()[:32] + bytes(32))
    for found, _ in walks(lambda: TileReader(tiled), 0, store(*SIZES)):
        assert found == [("bad-tiles", None, "tile/0/001: its root is not what the level above stores (1 tile(s))")]


def test_level_1_tile_missing_is_bad_tiles(tiled: Path) -> None:
    for partial in (tiled / "tile/1/000.p").iterdir():
        partial.unlink()
    detail = "no tile tile/1/000 with 2 hashes: its root is not what the level above stores (1 tile(s))"
    for found, _ in walks(lambda: TileReader(tiled), 0, store(300, 600)):
        assert found == [("bad-tiles", None, detail)]


def test_every_store_checkpoint_is_held_against_the_tiles(tiled: Path) -> None:
    """Whatever comes before it among the notes: an outside checkpoint, one past the tiles, one whose root the
    tiles cannot give."""
    for partial in (tiled / "tile/0/002.p").iterdir():
        partial.unlink()
    notes = [outside(100), TreeNote(700, bytes(32), "store"), *store(600), *store(500, wrong=[500])]
    short = "the tiles cover 600 records, the newest checkpoint 700: no proofs can be made for what lies between"
    unreadable = "tiles at size 600: no tile tile/0/002 with 64 hashes"
    for found, _ in walks(lambda: TileReader(tiled), 0, notes, range(400), [[(0, 400)]]):
        assert found == [("bad-tiles", 600, short), ("bad-tiles", 599, unreadable),
                         ("bad-tiles", 499, TILES_ROOT.format(500))]


def test_tiles_shorter_than_the_newest_checkpoint_are_bad_tiles(tmp_path: Path) -> None:
    for found, roots in walks(lambda: tiles(tmp_path, 300), 0, store(100, 300, 600)):
        short = "the tiles cover 300 records, the newest checkpoint 600: no proofs can be made for what lies between"
        assert (found, roots) == ([("bad-tiles", 300, short)], roots_of(100, 300, 600))


@pytest.mark.parametrize("count", [520, 512])
def test_tiles_as_long_as_the_newest_checkpoint_but_shorter_than_the_records(tmp_path: Path, count: int) -> None:
    """The records past the tiles' size are not held against tiles that do not exist yet (512: not even the next
    tile's file)."""
    for found, _ in walks(lambda: tiles(tmp_path, count), 0, store(100, 300, count)):
        assert found == []


def test_no_tiles_written_yet(tmp_path: Path) -> None:
    """A tile directory without a tree size: the tiles cover nothing, which only a store checkpoint makes a
    finding (its proofs cannot be made); an outside checkpoint is judged by the records alone."""
    short = "the tiles cover 0 records, the newest checkpoint 300: no proofs can be made for what lies between"
    for found, _ in walks(lambda: TileReader(tmp_path), 0, store(300)):
        assert found == [("bad-tiles", 0, short)]
    for found, roots in walks(lambda: TileReader(tmp_path), 0, [outside(300)]):
        assert (found, roots) == ([], roots_of(300))


def test_tiles_longer_than_the_records_left(tiled: Path) -> None:
    """Records past 550 and their checkpoints gone: the tiles still describe 600 records, and agree."""
    seqs = range(550)
    for found, roots in walks(lambda: TileReader(tiled), 0, store(300, 550), seqs, [[(0, 550)], [(0, 540),
                                                                                                 (540, 550)]]):
        assert (found, roots) == ([], roots_of(300, 550))


def test_unreadable_tree_size_is_bad_tiles_once(tiled: Path) -> None:
    (tiled / "tile" / "tree-size").write_text("many\n")
    for found, roots in walks(lambda: TileReader(tiled), 0, store(300, 600)):
        assert (found, roots) == ([("bad-tiles", None, f"{tiled / 'tile' / 'tree-size'}: not a tree size")],
                                  roots_of(300, 600))


def test_missing_leaf_tile_is_bad_tiles_at_its_first_record(tiled: Path) -> None:
    (tiled / "tile/0/001").unlink()
    for found, _ in walks(lambda: TileReader(tiled), 0, store(600)):
        assert found == [("bad-tiles", 256, "no tile tile/0/001 with 256 hashes")]


def test_store_checkpoint_the_walk_did_not_reach_is_held_against_the_tiles(tiled: Path) -> None:
    """Past a gap the walk computes no root: the tiles' root at the checkpoint's size must still be its root."""
    seqs = range(400)
    runs = [[(0, 400)]]
    for found, _ in walks(lambda: TileReader(tiled), 0, store(300, 500, 600), seqs, runs):
        assert found == []
    for found, _ in walks(lambda: TileReader(tiled), 0, store(300, 500, 600, wrong=[500]), seqs, runs):
        assert found == [("bad-tiles", 499, TILES_ROOT.format(500))]


def test_tiles_that_cannot_give_a_root_the_walk_did_not_reach(tiled: Path) -> None:
    for partial in (tiled / "tile/0/002.p").iterdir():
        partial.unlink()
    for found, _ in walks(lambda: TileReader(tiled), 0, store(300, 600), range(400), [[(0, 400)]]):
        assert found == [("bad-tiles", 599, "tiles at size 600: no tile tile/0/002 with 64 hashes")]


def test_no_tiles_at_all_checks_the_records_alone() -> None:
    for found, roots in walks(None, 0, store(*SIZES, wrong=[300])):
        assert (found, roots) == ([("checkpoint-mismatch", 299, REWRITTEN.format(300))], roots_of(*SIZES))


# --- a walk that starts inside the log (a trusted checkpoint, records expired) --------------------------------------

@pytest.mark.parametrize("begin", [299, 256, 1, 511])
def test_walk_from_inside_the_log_takes_the_frontier_from_the_tiles(tiled: Path, begin: int) -> None:
    later = [s for s in SIZES if s > begin]
    for found, roots in walks(lambda: TileReader(tiled), begin, store(*SIZES), runs=[
            [(begin, 530), (530, 600)], [(begin, 600)], [(begin - 1, begin + 3), (begin + 3, 600)]]):
        assert (found, roots) == ([], roots_of(*later))


def test_walk_from_inside_the_log_finds_a_rewritten_checkpoint_after_the_start(tiled: Path) -> None:
    for found, _ in walks(lambda: TileReader(tiled), 299, store(*SIZES, wrong=[300, 100]), runs=[[(299, 600)]]):
        assert found == [("checkpoint-mismatch", 299, REWRITTEN.format(300)),
                         ("bad-tiles", 99, TILES_ROOT.format(100)), ("bad-tiles", 299, TILES_ROOT.format(300))]


def test_walk_from_inside_the_log_without_tiles_cannot_recompute_the_roots() -> None:
    missing = ("tree checkpoints past seq 299 cannot be recomputed: the tiles lack the tree before it (no tiles are "
               "stored with these records)")
    for found, roots in walks(None, 299, store(100, 300, 600), runs=[[(299, 600)]]):
        assert (found, roots) == ([("checkpoint-mismatch", 299, missing)], {})


def test_walk_from_inside_the_log_without_tiles_and_nothing_to_check_is_silent() -> None:
    for found, roots in walks(None, 299, store(100, 299), runs=[[(299, 600)]]):
        assert (found, roots) == ([], {})


def test_walk_from_inside_the_log_with_tiles_lacking_the_start(tmp_path: Path) -> None:
    missing = ("tree checkpoints past seq 299 cannot be recomputed: the tiles lack the tree before it (no tile "
               "tile/0/001 with 32 hashes)")
    for found, _ in walks(lambda: tiles(tmp_path, 280), 299, store(600), runs=[[(299, 600)]]):
        assert found[0] == ("checkpoint-mismatch", 299, missing)


def test_frontier_from_a_damaged_level_gives_no_root_past_the_start(tiled: Path) -> None:
    """Level 1's first hash is the frontier's first hash at 299: zeroed, every root past it is wrong."""
    path = tiled / "tile/1/000.p/2"
    path.write_bytes(bytes(32) + path.read_bytes()[32:])
    expected = [("checkpoint-mismatch", 299, REWRITTEN.format(300)), ("checkpoint-mismatch", 599, REWRITTEN.format(600)),
                ("bad-tiles", None, "tile/0/000: its root is not what the level above stores (1 tile(s))")]
    for found, _ in walks(lambda: TileReader(tiled), 299, store(300, 600), runs=[[(299, 600)]]):
        assert found == expected


# --- outside checkpoints older than the first record walked: consistency proofs from the tiles -------------------

def test_old_outside_checkpoint_extended_by_the_newest_store_checkpoint_is_no_finding(tiled: Path) -> None:
    for found, _ in walks(lambda: TileReader(tiled), 299, [*store(300, 600), outside(100), outside(299)],
                          runs=[[(299, 600)]]):
        assert found == []


def test_old_outside_checkpoint_not_extended_is_a_fork(tiled: Path) -> None:
    for found, _ in walks(lambda: TileReader(tiled), 299, [*store(300, 600), outside(100, wrong=True)],
                          runs=[[(299, 600)]]):
        assert len(found) == 1 and found[0][:2] == ("fork", 99)
        assert found[0][2].startswith(f"checkpoint of size 100 from {AUDITOR} is not extended by the log's "
                                      "checkpoint of size 600: ")


def test_old_outside_checkpoint_without_a_newer_store_checkpoint_is_not_judged(tiled: Path) -> None:
    """Nothing in the store to prove consistency with (no store checkpoint, or only an older one)."""
    for notes in ([outside(100, wrong=True)], [*store(50), outside(100, wrong=True)]):
        for found, _ in walks(lambda: TileReader(tiled), 299, notes, runs=[[(299, 600)]]):
            assert found == []


def test_old_outside_checkpoints_are_each_judged(tiled: Path) -> None:
    """One that nothing in the store extends (270 > 250, the newest store checkpoint), then one that is not a
    prefix: the second is still judged."""
    for found, _ in walks(lambda: TileReader(tiled), 299, [*store(250), outside(270), outside(100, wrong=True)],
                          runs=[[(299, 600)]]):
        assert [f[:2] for f in found] == [("fork", 99)]


def test_old_outside_checkpoint_of_the_walks_first_size_is_judged_by_proof(tiled: Path) -> None:
    """Size 299 (the walk begins at seq 299, the trusted checkpoint's last record): no root of the walk is at that
    size, so only the consistency proof can judge it."""
    for found, _ in walks(lambda: TileReader(tiled), 299, [*store(600), outside(299, wrong=True), outside(50)],
                          runs=[[(299, 600)]]):
        assert [f[:2] for f in found] == [("fork", 298)]


def test_old_outside_checkpoint_of_the_newest_store_size_is_judged(tiled: Path) -> None:
    for found, _ in walks(lambda: TileReader(tiled), 299, [*store(250), outside(250, wrong=True)],
                          runs=[[(299, 600)]]):
        assert [f[:2] for f in found] == [("fork", 249)]


def test_old_outside_checkpoint_without_tiles_is_a_fork() -> None:
    missing = ("tree checkpoints past seq 299 cannot be recomputed: the tiles lack the tree before it (no tiles are "
               "stored with these records)")
    unproven = (f"checkpoint of size 100 from {AUDITOR} is not extended by the log's checkpoint of size 600: no tiles "
                "are stored with these records")
    for found, _ in walks(None, 299, [*store(100, 600), outside(100)], runs=[[(299, 600)]]):
        assert found == [("checkpoint-mismatch", 299, missing), ("fork", 99, unproven)]


# --- tree_notes: which signed notes are tree checkpoints of the chain -----------------------------------------------

def test_tree_notes_are_the_chains_tree_checkpoints_signed_by_the_key() -> None:
    key = Ed25519PrivateKey.generate()
    head = "ab" * 32
    mine = cp.sign_tree(key, "h1", 300, root(300), head)
    texts = ["not a note", mine, mine, cp.sign_tree(key, "h1", 1, root(1), head),
             cp.sign_tree(key, "h1", 600, root(600), head),
             cp.sign(key, "h1", 100, head),  # a head checkpoint: the chain walk's
             cp.sign_tree(Ed25519PrivateKey.generate(), "h1", 400, root(400), head),  # another key
             cp.sign_tree(key, "h2", 500, root(500), head),  # another chain
             cp.sign_tree(key, "h1", 0, bytes(32), head),  # an empty tree
             "not a note", "\udcff"]
    assert tree_notes(texts, "h1", key.public_key(), "store") == [
        TreeNote(300, root(300), "store"), TreeNote(1, root(1), "store"), TreeNote(600, root(600), "store")]
    assert tree_notes([mine], "h1", key.public_key(), "the trusted checkpoint", walked=True) == [
        TreeNote(300, root(300), "the trusted checkpoint", True)]
