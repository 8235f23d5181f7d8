"""The Merkle tree stored as C2SP tlog-tiles hash tiles (https://c2sp.org/tlog-tiles), so proofs cost O(log n).

Layout under a chain directory (the spec's URL paths, as files):

- ``tile/<L>/<N>``: the full tile N at level L: 256 hashes of tree level 8L (level 0: the leaf hashes; level L > 0:
  the roots of the full tiles of level L - 1), 32 bytes each, concatenated.
- ``tile/<L>/<N>.p/<W>``: the partial tile N of width W (1..255): the first W hashes of that tile, for the tree's
  right edge. Only the newest width is kept; the full tile replaces them once it exists.
- ``<N>`` is written in groups of three decimal digits, all but the last prefixed with ``x``: 1234067 is
  ``x001/x234/067``.
- ``tile/tree-size``: the tree size the tiles describe (ours, not the spec's; inside ``tile/`` so that the chain
  directory, whose changes the local store watches for files planted by others, does not change for it). It is written after the tiles, and stale
  partial tiles are deleted only after it, so a crash at any point leaves the tiles of that size intact; the
  records beyond it are hashed again on start (``TileWriter.open``). Entry bundles (``tile/entries``) are not
  written: the records are the store's segments.

Durability: the tiles are derived from the records, which the store fsyncs before it writes their tiles; so the
tiles never need to survive a crash, only never to be believed when they did not. Each tile file is replaced
atomically (temporary file, rename) without an fsync of its own, and ``tree-size`` is written with
``common.fsio.write_atomic`` (fsync'd): two fsyncs per flush instead of two per tile. After kill -9 the page cache
holds everything written; after a power loss a tile may be missing or short, which ``TileWriter.open`` detects
(the local store then rebuilds the tiles from the records), and any other disagreement with the records is a
``bad-tiles`` finding of ``verify``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from audit.merkle import HASH_SIZE, node_hash
from common.fsio import write_atomic

HEIGHT = 8
WIDTH = 1 << HEIGHT
SIZE_FILE = "tree-size"
TILES = "tile"
SIZE_PATH = f"{TILES}/{SIZE_FILE}"  # inside tile/: the chain directory itself never changes for the tiles' sake


class TileError(Exception):
    """The tiles cannot give a hash the tree needs (missing, short, or not written by us); the message says why."""


def index_path(index: int) -> str:
    """C2SP tlog-tiles encoding of a tile index: 3-digit groups, all but the last prefixed with ``x``."""
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def tile_path(level: int, index: int, width: int = WIDTH) -> str:
    base = f"tile/{level}/{index_path(index)}"
    return base if width == WIDTH else f"{base}.p/{width}"


def _subtree_of(hashes: list[bytes]) -> bytes:
    """The root of a complete tree over ``hashes`` (a power of two of them)."""
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def _split(data: bytes) -> list[bytes]:
    return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


class TileReader:
    """``subtree(level, index)`` (audit/merkle.py ``Subtrees``) from the tiles in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[tuple[int, int], bytes] = {}

    def size(self) -> int:
        """The tree size the tiles were last written for (0 when there are none)."""
        try:
            text = (self.root / SIZE_PATH).read_text()
        except FileNotFoundError:
            return 0
        if not text.strip().isdigit():
            raise TileError(f"{self.root / SIZE_PATH}: not a tree size")
        return int(text)

    def tile(self, level: int, index: int, need: int) -> bytes:
        """The tile's bytes, holding at least ``need`` hashes (a full tile, else the widest partial one)."""
        cached = self._cache.get((level, index))
        if cached is not None and len(cached) >= need * HASH_SIZE:
            return cached
        full = self.root / tile_path(level, index)
        try:
            data = full.read_bytes()
        except FileNotFoundError:
            partials = self.root / f"{tile_path(level, index)}.p"
            # C2SP: a partial tile is 1 to 255 hashes wide; a wider one is not a tile (and would be hashed as one)
            widths = ([int(p.name) for p in partials.iterdir() if p.name.isdigit() and 0 < int(p.name) < WIDTH]
                      if partials.is_dir() else [])
            if not widths or max(widths) < need:
                raise TileError(f"no tile {tile_path(level, index)} with {need} hashes") from None
            data = (partials / str(max(widths))).read_bytes()
            if len(data) != max(widths) * HASH_SIZE:
                raise TileError(f"{tile_path(level, index, max(widths))} is {len(data)} bytes, not a tile")
        else:
            if len(data) != WIDTH * HASH_SIZE:
                raise TileError(f"{tile_path(level, index)} is {len(data)} bytes, not a full tile")
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[(level, index)] = data
        return data

    def subtree(self, level: int, index: int) -> bytes:
        tile_level, rest = divmod(level, HEIGHT)
        first = index << rest  # in hashes of tree level 8 * tile_level
        tile_index, offset = divmod(first, WIDTH)
        data = self.tile(tile_level, tile_index, offset + (1 << rest))
        return _subtree_of(_split(data[offset * HASH_SIZE:(offset + (1 << rest)) * HASH_SIZE]))


    def broken_links(self, size: int, known: Mapping[int, bytes] | None = None) -> list[str]:
        """Full tiles whose root is not the hash the level above stores for them (for a tree of ``size``).
        ``known``: roots of full level-0 tiles by index, already computed from the very bytes ``tile`` gives for
        them (verify: from the records' leaf hashes found equal to those bytes); used instead of hashing again."""
        bad = []
        level, count = 0, size
        while count >= WIDTH:
            full = count // WIDTH
            for start in range(0, full, WIDTH):  # one tile of the level above per WIDTH full tiles here
                above = _split(self.tile(level + 1, start // WIDTH, min(WIDTH, full - start)))
                for k in range(start, min(full, start + WIDTH)):
                    root = known.get(k) if known and level == 0 else None
                    if root is None:
                        root = _subtree_of(_split(self.tile(level, k, WIDTH)))
                    if root != above[k - start]:
                        bad.append(tile_path(level, k))
            level, count = level + 1, full
        return bad


class TileWriter:
    """Appends leaf hashes and writes the tiles they complete or extend. Holds the rightmost tile of each level."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.size = 0
        self.levels: list[list[bytes]] = [[]]
        self._full: list[tuple[int, int, bytes]] = []
        self._dirty: set[int] = set()

    @classmethod
    def open(cls, root: Path) -> TileWriter:
        """The writer at the size the tiles were last completely written for (``TileError`` when unreadable)."""
        writer = cls(root)
        size = TileReader(root).size()
        level, count = 0, size
        while count:
            index, width = divmod(count, WIDTH)
            if width:
                path = writer.root / tile_path(level, index, width)
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    raise TileError(f"{path}: missing for tree size {size}") from None
                if len(data) != width * HASH_SIZE:
                    raise TileError(f"{path}: {len(data)} bytes, not a tile of width {width}")
                while len(writer.levels) <= level:
                    writer.levels.append([])
                writer.levels[level] = _split(data)
            level, count = level + 1, count // WIDTH
        writer.size = size
        return writer

    def append(self, leaves: Iterable[bytes]) -> None:
        row = self.levels[0]
        for leaf in leaves:
            row.append(leaf)
            self.size += 1
            if len(row) == WIDTH:
                self._completed(0)
                row = self.levels[0]
        self._dirty.add(0)

    def _completed(self, level: int) -> None:
        """The rightmost tile of ``level`` just filled up: keep it for writing, carry its root one level up."""
        row = self.levels[level]
        self._full.append((level, (self.size >> (HEIGHT * level)) // WIDTH - 1, b"".join(row)))
        self.levels[level] = []
        if len(self.levels) == level + 1:
            self.levels.append([])
        above = self.levels[level + 1]
        above.append(_subtree_of(row))
        self._dirty.add(level + 1)
        if len(above) == WIDTH:
            self._completed(level + 1)

    def changes(self) -> list[tuple[int, int, bytes]]:
        """``(level, index, hashes)`` of every tile changed since the last call (full ones first, then the right
        edge, highest level first), forgotten here: for a store that writes them itself (Elasticsearch)."""
        out = list(self._full)
        for level in sorted(self._dirty, reverse=True):
            if self.levels[level]:
                out.append((level, (self.size >> (HEIGHT * level)) // WIDTH, b"".join(self.levels[level])))
        self._full.clear()
        self._dirty.clear()
        return out

    def flush(self) -> None:
        """Write the tiles changed since the last flush, then the size, then drop what they superseded."""
        for level, index, data in self._full:
            self._write(tile_path(level, index), data)
        partial = []
        for level in sorted(self._dirty):
            row = self.levels[level]
            if row:
                index = (self.size >> (HEIGHT * level)) // WIDTH
                self._write(tile_path(level, index, len(row)), b"".join(row))
                partial.append((level, index, len(row)))
        (self.root / TILES).mkdir(exist_ok=True)
        write_atomic(self.root / SIZE_PATH, b"%d\n" % self.size)
        for level, index, _ in self._full:
            shutil.rmtree(self.root / f"{tile_path(level, index)}.p", ignore_errors=True)
        for level, index, width in partial:
            directory = self.root / f"{tile_path(level, index)}.p"
            for stale in directory.iterdir():
                if stale.name != str(width):
                    stale.unlink(missing_ok=True)
        self._full.clear()
        self._dirty.clear()

    def _write(self, relative: str, data: bytes) -> None:
        """Atomic (a reader sees the old tile or the new one, never a torn one) but not fsync'd: see the module
        doc for why the tiles need no fsync of their own."""
        path = self.root / relative
        os.makedirs(path.parent, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
