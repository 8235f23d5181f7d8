"""The records' Merkle tree as C2SP tlog-tiles (https://c2sp.org/tlog-tiles) kept in Elasticsearch.

The counterpart of audit/tiles.py's files, for the Elasticsearch sink:

- Where: in the chain's *checkpoint* data stream (``logs-tee.audit.checkpoints-<ns>``), which has no retention,
  so inclusion and consistency proofs outlive the records (a receipt for a record whose backing index retention
  deleted, a known checkpoint below the oldest record still present).
- One document per tile, ``_id`` = ``<chain>:<tile path>`` with the spec's path (``h1:tile/0/x001/234``; a
  partial tile of width W is its own document ``h1:tile/0/235.p/17``), source ``{"@timestamp", "chain": {"id"},
  "tile": {"level", "index", "width", "hashes"}}``, ``hashes`` the tile's bytes in base64 (a ``binary`` field:
  in ``_source``, not indexed). Created with bulk ``create`` like everything else: full tiles are immutable,
  partial ones are never updated in place (a wider one is a new document), so the shipper needs no privilege
  beyond ``create_doc``.
- A partial tile that grows from a width F already stored holds only its new hashes: ``h1:tile/0/235.p/17`` with
  ``tile.from`` = 10 holds the 7 hashes after the first 10, which are those of the document of width 10. The
  shipper cannot delete the narrower documents a wider one supersedes, and stored whole each of them repeated up
  to 255 hashes per checkpoint, in the one stream that is never deleted. Full tiles are always whole.
- Tree size: the largest ``index * 256 + width`` among the level-0 tiles. The sink sends a flush's tiles in one
  bulk with the level-0 ones last (Elasticsearch applies a shard's items in order), so when the level-0 tile of a
  size is there, the tiles of the levels above it are too.
- Reading takes, per (level, index), the widest tile whose ``_id`` names what its content says (any other
  document there is not ours), joined to the narrower documents it grows from; a wider partial tile serves every
  smaller width (its first hashes).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.merkle import HASH_SIZE
from audit.tiles import WIDTH, TileError, TileReader, TileWriter, tile_path

Fetch = Callable[[str, str, Any], Any]  # (method, path, JSON body) -> the parsed answer


def tile_id(chain_id: str, level: int, index: int, width: int) -> str:
    return f"{chain_id}:{tile_path(level, index, width)}"


@dataclass(frozen=True)
class TileDoc:
    """A tile document: hashes ``start`` to ``width`` (exclusive) of tile ``(level, index)``."""
    level: int
    index: int
    width: int
    start: int
    hashes: bytes

    @classmethod
    def of(cls, level: int, index: int, data: bytes, start: int = 0) -> TileDoc:
        """The document holding tile ``data`` from hash ``start`` on."""
        return cls(level, index, len(data) // HASH_SIZE, start, data[start * HASH_SIZE:])

    def ident(self, chain_id: str) -> str:
        return tile_id(chain_id, self.level, self.index, self.width)

    def source(self, chain_id: str) -> dict[str, Any]:
        """The document's identifying content (what a stored one is compared by)."""
        tile: dict[str, Any] = {"level": self.level, "index": self.index, "width": self.width,
                                "hashes": base64.b64encode(self.hashes).decode()}
        return {"chain": {"id": chain_id}, "tile": {**tile, "from": self.start} if self.start else tile}


def tile_of(source: Any, chain_id: str, ident: str) -> TileDoc | None:
    """The tile document ``source``, None when it is not a well-formed tile of ``chain_id`` stored under the
    ``_id`` its content names."""
    try:
        tile = source["tile"]
        level, index, width, start = tile["level"], tile["index"], tile["width"], tile.get("from", 0)
        data = base64.b64decode(tile["hashes"], validate=True)
        if source["chain"]["id"] != chain_id or not all(type(v) is int for v in (level, index, width, start)):
            return None
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
        return None
    if not 0 < width <= WIDTH or not 0 <= start < width or (start and width == WIDTH):
        return None  # a full tile is stored whole
    if len(data) != (width - start) * HASH_SIZE or ident != tile_id(chain_id, level, index, width):
        return None
    return TileDoc(level, index, width, start, data)


class EsTileReader(TileReader):
    """``TileReader`` (size, tile, subtree, broken_links) over the tile documents of one chain. ``ahead``: tiles of
    a level fetched per request (1 for a receipt's few tiles; many for ``verify``, which reads them in order)."""

    def __init__(self, fetch: Fetch, stream: str, chain_id: str, ahead: int = 1) -> None:
        self.fetch, self.stream, self.chain_id, self.ahead = fetch, stream, chain_id, ahead
        self._tiles: dict[tuple[int, int], bytes] = {}

    def _search(self, level: int, query: dict[str, Any], size: int, order: str, collapse: str = "tile.index",
                ids: list[str] | None = None) -> list[TileDoc]:
        """The tile documents of ``level`` matching ``query`` (ranges on ``tile.index``) and ``ids``, by index in
        ``order``, one per value of the ``collapse`` field (the widest of each index by default)."""
        body: dict[str, Any] = {
            "size": size, "track_total_hits": False, "_source": ["chain", "tile"],
            "query": {"bool": {"filter": [{"term": {"chain.id": self.chain_id}}, {"term": {"tile.level": level}},
                                          *({"range": {field: bounds}} for field, bounds in query.items()),
                                          *([{"ids": {"values": ids}}] if ids else [])]}},
            "sort": [{"tile.index": {"order": order, "unmapped_type": "long"}},
                     {"tile.width": {"order": "desc", "unmapped_type": "long"}}],
            "collapse": {"field": collapse}}
        answer = self.fetch("POST", f"/{self.stream}/_search?ignore_unavailable=true", body)
        if (answer.get("_shards") or {}).get("failed"):
            raise TileError(f"the search for tiles failed on some shard: {str(answer['_shards'])[:300]}")
        found = (tile_of(hit.get("_source"), self.chain_id, hit.get("_id")) for hit in answer["hits"]["hits"])
        return [doc for doc in found if doc is not None and doc.level == level]

    def whole(self, doc: TileDoc) -> bytes:
        """The tile stored as ``doc``: its hashes after those of the narrower documents it grows from."""
        if not doc.start:
            return doc.hashes
        # Only the _ids ours would have (they name level, index and width), one document per width: neither
        # documents under other _ids nor copies of ours (created again after the stream rolled over: an _id is
        # unique per backing index) crowd narrower widths out of the WIDTH hits.
        narrower = {other.width: other for other in self._search(
            doc.level, {}, WIDTH, "asc", collapse="tile.width",
            ids=[tile_id(self.chain_id, doc.level, doc.index, width) for width in range(1, doc.start + 1)])}
        pieces, width, start = [doc.hashes], doc.width, doc.start
        while start:
            below = narrower.get(start)
            if below is None:  # named with the document whose link is broken, not the chain's widest
                raise TileError(f"no tile {tile_path(doc.level, doc.index, start)} in Elasticsearch, which "
                                f"{tile_path(doc.level, doc.index, width)} grows from")
            pieces.append(below.hashes)
            width, start = below.width, below.start
        return b"".join(reversed(pieces))

    def size(self) -> int:
        """The tree size the level-0 tiles were written for (0 when there are none)."""
        top = self._search(0, {"tile.index": {"gte": 0}}, 1, "desc")
        return edge_size(top[0] if top else None)

    def seed(self, doc: TileDoc) -> None:
        """A tile read by the caller already (the sink's start-up query), so it is not asked for again."""
        if not doc.start:
            self._tiles[(doc.level, doc.index)] = doc.hashes

    def tile(self, level: int, index: int, need: int) -> bytes:
        data = self._tiles.get((level, index))
        if data is None or len(data) < need * HASH_SIZE:
            if len(self._tiles) > 4 * self.ahead + 64:
                self._tiles.clear()
            for doc in self._search(level, {"tile.index": {"gte": index, "lt": index + self.ahead}}, self.ahead,
                                    "asc"):
                self._tiles[(level, doc.index)] = self.whole(doc)
            data = self._tiles.get((level, index))
        if data is None or len(data) < need * HASH_SIZE:
            raise TileError(f"no tile {tile_path(level, index)} with {need} hashes in Elasticsearch")
        return data


def edge_size(rightmost: TileDoc | None) -> int:
    """The tree size given by the rightmost level-0 tile (0: none)."""
    return rightmost.index * WIDTH + rightmost.width if rightmost else 0


def writer_at(tiles: EsTileReader, size: int) -> TileWriter:
    """A tile writer holding the right edge of the tree of ``size`` from the stored tiles (``TileError`` when one
    is missing). It is never flushed to files: its ``changes()`` go to Elasticsearch."""
    writer = TileWriter(Path())
    level, count = 0, size
    while count:
        index, width = divmod(count, WIDTH)
        while len(writer.levels) <= level:
            writer.levels.append([])
        if width:
            data = tiles.tile(level, index, width)[:width * HASH_SIZE]
            writer.levels[level] = [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        level, count = level + 1, count // WIDTH
    writer.size = size
    return writer
