"""The Merkle tree's tiles in Elasticsearch (audit/estiles.py), against the real server: written by the sink with
the records, equal to the local store's, crash-safe, and never trusted when already there."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from audit.sinks.elasticsearch import checkpoint_stream_name, data_stream_name
from audit.tiles import tile_path
from tests.audit.kit import TEE_AUDIT, es_setup, keys, ship_once, shipped_seq, verify_json, write_journal

pytestmark = pytest.mark.elasticsearch


def es_tiles(url: str, namespace: str, chain: str = "h1") -> dict[str, bytes]:
    """``_id`` -> hashes of every tile document of ``chain`` (each stored once: a second copy fails the test)."""
    es = Elasticsearch(url)
    stream = checkpoint_stream_name(data_stream_name(namespace))
    es.indices.refresh(index=stream)
    hits = es.search(index=stream, size=10_000, query={"bool": {"filter": [
        {"term": {"chain.id": chain}}, {"exists": {"field": "tile.level"}}]}})["hits"]["hits"]
    out: dict[str, bytes] = {}
    for hit in hits:
        assert hit["_id"] not in out, f"tile {hit['_id']} stored twice"
        out[hit["_id"]] = base64.b64decode(hit["_source"]["tile"]["hashes"])
    return out


def store_tiles(chain_dir: Path) -> dict[str, bytes]:
    root = chain_dir
    return {f"h1:{p.relative_to(root)}": p.read_bytes() for p in (root / "tile").rglob("*")
            if p.is_file() and p.name != "tree-size"}


def test_the_sink_writes_the_local_stores_tiles_as_documents(tmp_path: Path, elasticsearch: str,
                                                           es_namespace: str) -> None:
    key, public = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 700)
    assert ship_once([journal], key, tmp_path / "spool", store=tmp_path / "store", es=elasticsearch,
                     namespace=es_namespace, every=100) == 0
    ours, theirs = es_tiles(elasticsearch, es_namespace), store_tiles(tmp_path / "store" / "h1")
    # the store keeps the newest partial tile of each level only; Elasticsearch keeps each width it was sent
    assert {k: v for k, v in ours.items() if k in theirs} == theirs
    assert f"h1:{tile_path(0, 0)}" in ours and f"h1:{tile_path(0, 2, 188)}" in ours
    code, report = verify_json("--es", elasticsearch, "--data-stream", data_stream_name(es_namespace),
                               "--public-key", str(public))
    assert (code, report["findings"]) == (0, [])
