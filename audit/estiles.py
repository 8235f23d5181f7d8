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
- Tree size: the largest ``index * 256 + width`` among the level-0 tiles. The sink sends a flush's tiles in one
  bulk with the level-0 ones last (Elasticsearch applies a shard's items in order), so when the level-0 tile of a
  size is there, the tiles of the levels above it are too.
- Reading takes, per (level, index), the widest tile whose ``_id`` names what its content says (any other
  document there is not ours); a wider partial tile serves every smaller width (its first hashes).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit.merkle import HASH_SIZE
from audit.tiles import WIDTH, TileError, TileReader, TileWriter, tile_path

Fetch = Callable[[str, str, Any], Any]  # (method, path, JSON body) -> the parsed answer


def tile_id(chain_id: str, level: int, index: int, width: int) -> str:
    return f"{chain_id}:{tile_path(level, index, width)}"


def tile_fields(chain_id: str, level: int, index: int, data: bytes) -> dict[str, Any]:
    """The identifying content of a tile document (what a stored one is compared by)."""
    return {"chain": {"id": chain_id}, "tile": {"level": level, "index": index, "width": len(data) // HASH_SIZE,
                                                "hashes": base64.b64encode(data).decode()}}


def tile_of(source: Any, chain_id: str, ident: str) -> tuple[int, int, bytes] | None:
    """``(level, index, hashes)`` of a stored tile document, None when it is not a well-formed tile of
    ``chain_id`` stored under the ``_id`` its content names."""
    try:
        tile = source["tile"]
        level, index, width = tile["level"], tile["index"], tile["width"]
        data = base64.b64decode(tile["hashes"], validate=True)
        if source["chain"]["id"] != chain_id or not all(type(v) is int for v in (level, index, width)):
            return None
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    if not 0 < width <= WIDTH or len(data) != width * HASH_SIZE or ident != tile_id(chain_id, level, index, width):
        return None
    return level, index, data


class EsTileReader(TileReader):
    """``TileReader`` (size, tile, subtree, broken_links) over the tile documents of one chain. ``ahead``: tiles of
    a level fetched per request (1 for a receipt's few tiles; many for ``verify``, which reads them in order)."""

    def __init__(self, fetch: Fetch, stream: str, chain_id: str, ahead: int = 1) -> None:
        self.fetch, self.stream, self.chain_id, self.ahead = fetch, stream, chain_id, ahead
        self._tiles: dict[tuple[int, int], bytes] = {}

    def _search(self, level: int, index_range: dict[str, int], size: int, order: str) -> list[tuple[int, bytes]]:
        """``(index, widest hashes)`` per tile index of ``level`` in ``index_range``."""
        body = {"size": size, "track_total_hits": False, "_source": ["chain", "tile"],
                "query": {"bool": {"filter": [{"term": {"chain.id": self.chain_id}}, {"term": {"tile.level": level}},
                                              {"range": {"tile.index": index_range}}]}},
                "collapse": {"field": "tile.index"},
                "sort": [{"tile.index": {"order": order, "unmapped_type": "long"}},
                         {"tile.width": {"order": "desc", "unmapped_type": "long"}}]}
        answer = self.fetch("POST", f"/{self.stream}/_search?ignore_unavailable=true", body)
        if (answer.get("_shards") or {}).get("failed"):
            raise TileError(f"the search for tiles failed on some shard: {str(answer['_shards'])[:300]}")
        hits = answer["hits"]["hits"]
        out = []
        for hit in hits:
            found = tile_of(hit.get("_source"), self.chain_id, hit.get("_id"))
            if found is not None and found[0] == level:
                out.append((found[1], found[2]))
        return out

    def size(self) -> int:
        """The tree size the level-0 tiles were written for (0 when there are none)."""
        top = self._search(0, {"gte": 0}, 1, "desc")
        return edge_size(top[0] if top else None)

    def seed(self, level: int, index: int, data: bytes) -> None:
        """A tile read by the caller already (the sink's start-up query), so it is not asked for again."""
        self._tiles[(level, index)] = data

    def tile(self, level: int, index: int, need: int) -> bytes:
        data = self._tiles.get((level, index))
        if data is None or len(data) < need * HASH_SIZE:
            if len(self._tiles) > 4 * self.ahead + 64:
                self._tiles.clear()
            for at, hashes in self._search(level, {"gte": index, "lt": index + self.ahead}, self.ahead, "asc"):
                self._tiles[(level, at)] = hashes
            data = self._tiles.get((level, index))
        if data is None or len(data) < need * HASH_SIZE:
            raise TileError(f"no tile {tile_path(level, index)} with {need} hashes in Elasticsearch")
        return data


def edge_size(rightmost: tuple[int, bytes] | None) -> int:
    """The tree size given by the rightmost level-0 tile ``(index, hashes)`` (0: none)."""
    return rightmost[0] * WIDTH + len(rightmost[1]) // HASH_SIZE if rightmost else 0


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
