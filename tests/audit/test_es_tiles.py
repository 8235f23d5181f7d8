"""The Merkle tree's tiles in Elasticsearch (audit/estiles.py), against the real server: written by the sink with
the records, equal to the local store's, crash-safe, and never trusted when already there."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from audit import checkpoint as cp
from audit.readers import elasticsearch as es_reader
from audit.sinks.elasticsearch import checkpoint_stream_name, data_stream_name
from audit.tiles import tile_path
from tests.audit.kit import TEE_AUDIT, es_setup, keys, ship_once, shipped_seq, verify_json, write_journal
from tests.fixtures.litewitness import Litewitness

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


def test_partial_tiles_hold_only_the_hashes_each_flush_adds(tmp_path: Path, elasticsearch: str,
                                                            es_namespace: str) -> None:
    """A live shipper sends the tiles with every checkpoint, and the shipper cannot delete the partial tiles a
    wider one supersedes. Stored whole, 3000 records with a checkpoint every 10 made 311 partial-tile documents
    holding 1.66 MB of hashes, 14x the full tiles, in a stream that is never deleted. Grown from the stored width,
    each leaf hash is in at most one level-0 partial document, and the tiles read back equal the local store's."""
    key, public = keys(tmp_path / "keys")
    journal, records = tmp_path / "journal.jsonl", 700
    write_journal(journal, records)
    assert ship_once([journal], key, tmp_path / "spool", store=tmp_path / "store", es=elasticsearch,
                     namespace=es_namespace, every=10, es_batch_size=10) == 0
    partial = [hit["_source"]["tile"] for hit in EsLog(tmp_path, elasticsearch, es_namespace).docs("tile.level")
               if hit["_source"]["tile"]["width"] < 256]
    level0 = [t for t in partial if t["level"] == 0]
    assert len(level0) == records // 10  # one per flush: no flush ends on a tile boundary
    assert sum(t["width"] - t.get("from", 0) for t in level0) <= records
    assert all(len(base64.b64decode(t["hashes"])) == 32 * (t["width"] - t.get("from", 0)) for t in partial)
    client = es_reader.connect(es_reader.EsOptions(elasticsearch))
    reader = es_reader.tiles(client, data_stream_name(es_namespace), "h1")
    for path, data in store_tiles(tmp_path / "store" / "h1").items():  # the newest width of each partial tile
        level, index, width = _tile_address(path)
        assert reader.tile(level, index, width)[:len(data)] == data, path
    code, report = verify_json("--es", elasticsearch, "--data-stream", data_stream_name(es_namespace),
                               "--public-key", str(public))
    assert (code, report["findings"]) == (0, [])


def test_a_partial_tile_missing_the_width_it_grows_from_is_bad_tiles(eslog: EsLog) -> None:
    """The eslog's 300 records left tile 1 of level 0 44 wide; 60 more grow it to 104, stored from 44 on."""
    assert eslog.ship(60) == 0
    grown = next(h for h in eslog.docs("tile.level") if h["_id"] == f"h1:{tile_path(0, 1, 104)}")
    assert grown["_source"]["tile"]["from"] == 44
    base = next(h for h in eslog.docs("tile.level") if h["_id"] == f"h1:{tile_path(0, 1, 44)}")
    eslog.es.delete(index=base["_index"], id=base["_id"], refresh=True)
    proc = eslog.prove(350)
    assert proc.returncode == 2 and f"no tile {tile_path(0, 1, 44)} in Elasticsearch, which {tile_path(0, 1, 104)} " \
        "grows from" in proc.stderr, proc.stderr
    code, report = eslog.verify()
    assert code == 1 and [f["kind"] for f in report["findings"]] == ["bad-tiles"], report


# -- helpers ---------------------------------------------------------------------------------------------------------
class EsLog:
    """A chain shipped to one namespace of the real Elasticsearch (checkpoints every 100 records)."""

    def __init__(self, tmp: Path, url: str, namespace: str, **extra: Any) -> None:
        self.tmp, self.url, self.namespace, self.extra = tmp, url, namespace, extra
        self.key, self.public = keys(tmp / "keys")
        self.journal = tmp / "journal.jsonl"
        self.stream = data_stream_name(namespace)
        self.shipped = 0
        self.es = Elasticsearch(url)

    def ship(self, count: int) -> int:
        write_journal(self.journal, count, start=self.shipped)
        self.shipped += count
        return ship_once([self.journal], self.key, self.tmp / "spool", es=self.url, namespace=self.namespace,
                         every=100, **self.extra)

    def verify(self, *extra: str) -> tuple[int, dict[str, Any]]:
        return verify_json("--es", self.url, "--data-stream", self.stream, "--public-key", str(self.public),
                           "--checkpoint-every-records", "100", *extra)

    def prove(self, seq: int, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TEE_AUDIT, "prove", "--es", self.url, "--data-stream", self.stream, "--seq",
                               str(seq), *extra], capture_output=True, text=True, timeout=60, check=False)

    def verify_proof(self, receipt: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TEE_AUDIT, "verify-proof", str(receipt), "--public-key", str(self.public), *extra],
                              capture_output=True, text=True, timeout=60, check=False)

    def docs(self, field: str) -> list[dict[str, Any]]:
        stream = checkpoint_stream_name(self.stream)
        self.es.indices.refresh(index=stream)
        return self.es.search(index=stream, size=10_000, query={"exists": {"field": field}})["hits"]["hits"]

    def plant(self, ident: str, source: dict[str, Any]) -> None:
        """What the host operator can do: create a document of its own where ours will go."""
        self.es.create(index=checkpoint_stream_name(self.stream), id=ident,
                       document={"@timestamp": "2026-11-28T00:00:00Z", **source}, refresh=True)


def _tile_address(ident: str) -> tuple[int, int, int]:
    """``(level, index, width)`` of a tile ``_id`` such as ``h1:tile/0/x001/234.p/17``."""
    _, level, rest = ident.split(":", 1)[1].split("/", 2)
    digits, _, width = rest.partition(".p/")
    return int(level), int("".join(part.removeprefix("x") for part in digits.split("/"))), int(width or 256)


def forged_tile(level: int, index: int, width: int) -> dict[str, Any]:
    return {"chain": {"id": "h1"}, "tile": {"level": level, "index": index, "width": width,
                                            "hashes": base64.b64encode(b"\x07" * 32 * width).decode()}}


def tamper_reason(caplog: pytest.LogCaptureFixture) -> str:
    errors = [str(getattr(r, "error", "")) for r in caplog.records if "TAMPER" in r.getMessage()]
    assert errors, "the sink must stop for tampering"
    return errors[0]


@pytest.fixture
def eslog(tmp_path: Path, elasticsearch: str, es_namespace: str) -> EsLog:
    log = EsLog(tmp_path, elasticsearch, es_namespace)
    assert log.ship(300) == 0
    return log


# -- checkpoint documents ----------------------------------------------------------------------------------------
def test_tree_checkpoint_documents_hold_the_merkle_root_and_the_chain_head_apart(eslog: EsLog) -> None:
    docs = eslog.docs("checkpoint.size")
    assert len(docs) == 3
    for doc in docs:
        body = doc["_source"]["checkpoint"]
        note = cp.parse(body["note"])
        assert (body["root"], body["head"]) == (note.root_hex, note.head.hex())  # type: ignore[union-attr]


# -- the sink never trusts what is already there -----------------------------------------------------------------
def test_a_tile_planted_where_ours_goes_stops_the_sink(eslog: EsLog, caplog: pytest.LogCaptureFixture) -> None:
    eslog.plant(f"h1:{tile_path(1, 0, 2)}", forged_tile(1, 0, 2))  # the level-1 tile once there are 512 records
    assert eslog.ship(300) != 0
    assert "a tile with this _id exists and is not the tile of our records" in tamper_reason(caplog)


def test_a_tile_planted_past_the_records_stops_the_sink(eslog: EsLog, caplog: pytest.LogCaptureFixture) -> None:
    """A wider level-0 tile than the records allow would make the sink build on a tree the host chose."""
    eslog.plant(f"h1:{tile_path(0, 1, 200)}", forged_tile(0, 1, 200))  # size 456: only 300 records are stored
    assert eslog.ship(100) != 0
    assert "the tiles describe 456 records, the data stream holds 300" in tamper_reason(caplog)


def test_a_tile_modified_in_elasticsearch_is_bad_tiles(eslog: EsLog) -> None:
    assert eslog.verify()[0] == 0
    hit = next(h for h in eslog.docs("tile.level") if h["_id"] == f"h1:{tile_path(0, 0)}")
    data = bytearray(base64.b64decode(hit["_source"]["tile"]["hashes"]))
    data[5 * 32] ^= 1  # the leaf hash of record 5
    eslog.es.update(index=hit["_index"], id=hit["_id"], refresh=True,
                    doc={"tile": {"hashes": base64.b64encode(bytes(data)).decode()}})
    code, report = eslog.verify()
    assert code == 1 and [(f["kind"], f["seq"]) for f in report["findings"]] == [("bad-tiles", 5)], report


def test_a_tile_rewritten_to_match_a_rewritten_record_is_caught_by_the_signed_root(eslog: EsLog) -> None:
    """The host edits record 5 and its leaf in the tile: records and tiles agree, the signed roots do not."""
    from audit.canonical import canonicalize, loads
    from audit.merkle import leaf_hash

    eslog.es.indices.refresh(index=eslog.stream)
    rec = eslog.es.search(index=eslog.stream, query={"term": {"chain.seq": 5}}, seq_no_primary_term=True
                          )["hits"]["hits"][0]
    source = dict(rec["_source"], message="nothing happened here")
    eslog.es.index(index=rec["_index"], id=rec["_id"], document=source, refresh=True,
                   if_seq_no=rec["_seq_no"], if_primary_term=rec["_primary_term"])
    hit = next(h for h in eslog.docs("tile.level") if h["_id"] == f"h1:{tile_path(0, 0)}")
    data = bytearray(base64.b64decode(hit["_source"]["tile"]["hashes"]))
    data[5 * 32:6 * 32] = leaf_hash(canonicalize(loads(canonicalize(source)).value))
    eslog.es.update(index=hit["_index"], id=hit["_id"], refresh=True,
                    doc={"tile": {"hashes": base64.b64encode(bytes(data)).decode()}})
    code, report = eslog.verify()
    found = [(f["kind"], f["seq"]) for f in report["findings"]]
    assert code == 1 and found == [("modified", 5), ("bad-tiles", None)], report
    assert "its root is not what the level above stores" in report["findings"][1]["detail"]


# -- proofs from Elasticsearch -----------------------------------------------------------------------------------
def test_receipt_from_elasticsearch_outlives_the_records_backing_index(eslog: EsLog) -> None:
    eslog.es.indices.rollover(alias=eslog.stream)
    assert eslog.ship(200) == 0
    receipt = eslog.tmp / "receipt"
    proc = eslog.prove(17, "--out", str(receipt))
    assert proc.returncode == 0, proc.stderr
    print(f"receipt from Elasticsearch for a typical record: {len(receipt.read_bytes())} bytes")
    assert len(receipt.read_bytes()) < 2048
    kept = eslog.tmp / "kept.note"  # an auditor's copy of an old checkpoint
    kept.write_text(next(h["_source"]["checkpoint"]["note"] for h in eslog.docs("checkpoint.size")
                         if h["_source"]["checkpoint"]["size"] == 100))
    first = min(eslog.es.indices.get(index=f".ds-{eslog.stream}-*"))
    eslog.es.indices.delete(index=first)  # retention
    proc = eslog.verify_proof(receipt)
    assert proc.returncode == 0 and proc.stdout.startswith("VALID: record 17"), proc.stdout + proc.stderr
    assert "is not in Elasticsearch" in eslog.prove(17).stderr
    proc = eslog.prove(350)  # still stored: proven from the tiles, whose older part outlives the records too
    assert proc.returncode == 0, proc.stderr
    code, report = eslog.verify("--known-checkpoint", str(kept))  # below retention: consistency from the tiles
    assert code == 0 and report["expired"] == 300, report


def test_no_receipt_from_tiles_that_do_not_give_the_signed_root(eslog: EsLog) -> None:
    hit = next(h for h in eslog.docs("tile.level") if h["_id"] == f"h1:{tile_path(0, 0)}")
    data = bytearray(base64.b64decode(hit["_source"]["tile"]["hashes"]))
    data[200 * 32] ^= 1  # a sibling on record 17's path
    eslog.es.update(index=hit["_index"], id=hit["_id"], refresh=True,
                    doc={"tile": {"hashes": base64.b64encode(bytes(data)).decode()}})
    proc = eslog.prove(17)
    assert proc.returncode == 2 and "record 17 and the tiles do not lead to the checkpoint's root" in proc.stderr, \
        proc.stderr


# -- crash safety ------------------------------------------------------------------------------------------------
def test_kill_9_while_tiles_are_written_then_rerun_leaves_them_intact_and_unduplicated(
        tmp_path: Path, elasticsearch: str, es_namespace: str, litewitness: Litewitness) -> None:
    """Witnessed too: after the rerun the witness has cosigned the whole log, proofs from the tiles accepted."""
    key, public = keys(tmp_path / "keys")
    litewitness.register("tee-audit/h1", cp.vkey("tee-audit/h1", cp.load_public(public)))
    journal, spool = tmp_path / "journal.jsonl", tmp_path / "spool"
    events = 3000
    write_journal(journal, events)
    es_setup(elasticsearch, es_namespace)
    cmd = [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", elasticsearch, "--es.namespace",
           es_namespace, "--signing-key", str(key), "--spool.dir", str(spool), "--chain", "h1",
           "--checkpoint.every-records", "100", "--es.batch-size", "150", "--log.level", "error",
           "--witness.urls", litewitness.url]
    for i in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mark = (i + 1) * events // 7
        while proc.poll() is None and shipped_seq(spool) < mark:
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        cursor = spool / "cursor-elasticsearch.json"
        if i % 2 == 0 and cursor.exists():
            cursor.unlink()  # a kill between a bulk and its cursor write: the replay meets stored tiles
    assert subprocess.run(cmd, check=False, timeout=300).returncode == 0
    tiles = es_tiles(elasticsearch, es_namespace)  # fails on a second copy of any tile
    assert f"h1:{tile_path(0, events // 256 - 1)}" in tiles
    code, report = verify_json("--es", elasticsearch, "--data-stream", data_stream_name(es_namespace),
                               "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, events, []), report
    assert litewitness.known("tee-audit/h1")[0] == events


def test_tiles_of_a_chain_shipped_before_tiles_are_rebuilt_from_its_records(eslog: EsLog) -> None:
    """Migration: a chain whose tiles are missing (shipped by an older version) gets them from its records."""
    for hit in eslog.docs("tile.level"):
        eslog.es.delete(index=hit["_index"], id=hit["_id"], refresh=True)
    assert eslog.verify()[0] == 1
    assert eslog.ship(100) == 0
    code, report = eslog.verify()
    assert (code, report["findings"]) == (0, []), report
    assert f"h1:{tile_path(0, 1, 144)}" in es_tiles(eslog.url, eslog.namespace)  # each stored once


def test_setup_gives_an_existing_checkpoint_stream_the_tile_fields(elasticsearch: str, es_namespace: str) -> None:
    """A checkpoint stream created before tiles (no lifecycle rolls it over) gets their mapping from setup."""
    from audit.sinks.elasticsearch import checkpoint_template

    es = Elasticsearch(elasticsearch)
    stream = checkpoint_stream_name(data_stream_name(es_namespace))
    old = checkpoint_template(es_namespace)
    for field in ("tile", "cosignature"):
        del old["template"]["mappings"]["properties"][field]
    es.indices.put_index_template(name=stream, **old)
    es.index(index=stream, op_type="create", document={"@timestamp": "2026-11-28T00:00:00Z", "chain": {"id": "x"}})
    assert "tile" not in next(iter(es.indices.get_mapping(index=stream).values()))["mappings"]["properties"]
    assert f"data stream {stream}: mapping up to date" in es_setup(elasticsearch, es_namespace)
    assert "tile" in next(iter(es.indices.get_mapping(index=stream).values()))["mappings"]["properties"]


def test_no_receipt_for_a_record_modified_in_elasticsearch(eslog: EsLog) -> None:
    eslog.es.indices.refresh(index=eslog.stream)
    rec = eslog.es.search(index=eslog.stream, query={"term": {"chain.seq": 17}}, seq_no_primary_term=True
                          )["hits"]["hits"][0]
    eslog.es.index(index=rec["_index"], id=rec["_id"], document=dict(rec["_source"], message="edited"),
                   refresh=True, if_seq_no=rec["_seq_no"], if_primary_term=rec["_primary_term"])
    proc = eslog.prove(17)
    assert proc.returncode == 2 and "record 17 and the tiles do not lead to the checkpoint's root" in proc.stderr, \
        proc.stderr
    assert eslog.prove(18).returncode == 0


def test_a_checkpoint_document_an_older_version_wrote_is_ours_when_a_replay_meets_it() -> None:
    """Before tiles, a tree checkpoint's document held the chain head in ``checkpoint.root``: a replay after the
    upgrade meets it and must take it for ours, and nothing else."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit.sinks.elasticsearch import ElasticsearchSink, utc

    head = "ab" * 32
    note = cp.sign_tree(Ed25519PrivateKey.generate(), "h1", 3, b"\x01" * 32, head)
    sink = ElasticsearchSink(Elasticsearch("http://127.0.0.1:9"), "h1")
    slot = sink._expected([], [{"size": 3, "hash": head, "t": 0.0, "note": note}])["h1:checkpoint:3"]
    doc = {"@timestamp": utc(0.0), "chain": {"id": "h1"}, "checkpoint": {"size": 3, "note": note}}
    new = {**doc, "checkpoint": {**doc["checkpoint"], "root": "01" * 32, "head": head}}
    legacy = {**doc, "checkpoint": {**doc["checkpoint"], "root": head}}
    assert slot.holds(new, "h1") and slot.holds(legacy, "h1")
    assert not slot.holds({**legacy, "checkpoint": {**legacy["checkpoint"], "head": head}}, "h1")
    assert not slot.holds({**new, "checkpoint": {**new["checkpoint"], "root": head}}, "h1")


def test_a_narrower_partial_tile_left_beside_ours_is_never_read(eslog: EsLog) -> None:
    """Stale partial tiles stay (the shipper cannot delete): a reader takes the widest of a tile index, so a
    narrower one, even forged, changes no proof, no verify and no later write."""
    eslog.plant(f"h1:{tile_path(0, 1, 20)}", forged_tile(0, 1, 20))  # ours at that index is 44 wide
    code, report = eslog.verify()
    assert (code, report["findings"]) == (0, []), report
    assert eslog.prove(280).returncode == 0
    assert eslog.ship(100) == 0
    code, report = eslog.verify()
    assert (code, report["findings"]) == (0, []), report
