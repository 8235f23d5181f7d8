"""C2SP tiles (audit/tiles.py): the tree they store, past the second level, and their crash safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit import merkle, tiles
from audit.sinks import localstore
from audit.tiles import SIZE_FILE, TileError, TileReader, TileWriter
from tests.audit.kit import keys, ship_once, write_journal

LEAVES = [merkle.leaf_hash(b"%d" % i) for i in range(66_000)]  # past 256 * 256: three tile levels
TREE = merkle.MemoryTree(LEAVES)


def test_tiles_give_the_tree_across_three_levels(tmp_path: Path) -> None:
    writer = TileWriter(tmp_path)
    for start in range(0, len(LEAVES), 7_000):  # flushes that end mid-tile at every level
        writer.append(LEAVES[start:start + 7_000])
        writer.flush()
    reader = TileReader(tmp_path)
    assert reader.size() == 66_000
    assert (tmp_path / "tile/2/000.p/1").read_bytes() == TREE.subtree(16, 0)
    assert (tmp_path / "tile/1/000").read_bytes() == b"".join(TREE.subtree(8, i) for i in range(256))
    for size in (1, 255, 256, 65_535, 65_536, 65_537, 66_000):
        assert merkle.root(reader.subtree, size) == merkle.root(TREE.subtree, size)
    for index in (0, 65_535, 65_536, 65_999):
        assert merkle.inclusion_proof(reader.subtree, index, 66_000) == merkle.inclusion_proof(TREE.subtree, index,
                                                                                               66_000)
    assert merkle.frontier_at(reader.subtree, 65_537).root() == merkle.root(TREE.subtree, 65_537)


def test_crash_before_the_size_is_written_leaves_the_previous_tree_readable(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    writer = TileWriter(tmp_path)
    writer.append(LEAVES[:300])
    writer.flush()
    real = tiles.write_atomic

    def crash_at_the_size(path: Path, data: bytes) -> None:
        if path.name == SIZE_FILE:
            raise OSError("killed")
        real(path, data)

    monkeypatch.setattr(tiles, "write_atomic", crash_at_the_size)
    writer.append(LEAVES[300:700])
    with pytest.raises(OSError, match="killed"):
        writer.flush()
    monkeypatch.undo()
    again = TileWriter.open(tmp_path)  # the tiles of size 300 are all still there
    assert again.size == 300
    again.append(LEAVES[300:700])
    again.flush()
    assert merkle.root(TileReader(tmp_path).subtree, 700) == merkle.root(TREE.subtree, 700)


def test_missing_partial_tile_is_an_error_not_a_wrong_tree(tmp_path: Path) -> None:
    writer = TileWriter(tmp_path)
    writer.append(LEAVES[:300])
    writer.flush()
    (tmp_path / "tile/0/001.p/44").unlink()
    with pytest.raises(TileError, match="missing for tree size 300"):
        TileWriter.open(tmp_path)


@pytest.mark.parametrize("damage", ["tiles behind the records", "tiles gone"])
def test_local_store_brings_its_tiles_up_to_the_records_on_start(tmp_path: Path, damage: str) -> None:
    key, _ = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 300)
    store = tmp_path / "store"
    assert ship_once([journal], key, tmp_path / "spool", store=store, every=100) == 0
    chain = store / "h1"
    if damage == "tiles gone":
        for path in sorted(chain.glob("tile/**/*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    else:  # a crash after the records of 256..299 were durable, before their tiles were
        (chain / "tile" / SIZE_FILE).write_text("256\n")
    localstore.LocalStore(store, "h1").close()
    leaves = [merkle.leaf_hash(line) for line in localstore.read_lines(chain)]
    assert TileReader(chain).size() == 300
    assert merkle.root(TileReader(chain).subtree, 300) == merkle.root(merkle.MemoryTree(leaves).subtree, 300)


def test_tampered_tile_is_reported_by_verify(tmp_path: Path) -> None:
    """A tile the records and checkpoints disagree with would make every proof through it fail: a finding."""
    from tests.audit.kit import kinds, verify_json

    key, public = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 300)
    store = tmp_path / "store"
    assert ship_once([journal], key, tmp_path / "spool", store=store, every=100) == 0
    tile = store / "h1" / "tile/0/000"
    data = bytearray(tile.read_bytes())
    data[5 * 32] ^= 1  # the leaf hash of record 5
    tile.write_bytes(bytes(data))
    code, report = verify_json("--store", str(store), "--public-key", str(public))
    assert code == 1 and kinds(report) == [("bad-tiles", 5)], report
    assert "another leaf hash for record 5" in report["findings"][0]["detail"]


def test_tampered_upper_level_tile_is_reported_by_verify(tmp_path: Path) -> None:
    """Level-1 hashes are what proofs beyond one tile use: they must be the roots of the level-0 tiles."""
    from tests.audit.kit import kinds, verify_json

    key, public = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 300)
    store = tmp_path / "store"
    assert ship_once([journal], key, tmp_path / "spool", store=store, every=100) == 0
    (store / "h1" / "tile/1/000.p/1").write_bytes(b"\x00" * 32)
    code, report = verify_json("--store", str(store), "--public-key", str(public))
    assert code == 1 and kinds(report) == [("bad-tiles", None)], report
    assert report["findings"][0]["detail"].startswith("tile/0/000: its root is not what the level above stores")


def test_tampered_leaf_in_the_partial_tile_is_reported_by_verify(tmp_path: Path) -> None:
    from tests.audit.kit import kinds, verify_json

    key, public = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 300)
    store = tmp_path / "store"
    assert ship_once([journal], key, tmp_path / "spool", store=store, every=100) == 0
    tile = store / "h1" / "tile/0/001.p/44"
    data = bytearray(tile.read_bytes())
    data[10 * 32 + 7] ^= 0x80  # the leaf hash of record 266
    tile.write_bytes(bytes(data))
    code, report = verify_json("--store", str(store), "--public-key", str(public))
    assert code == 1 and kinds(report) == [("bad-tiles", 266)], report
