"""Attacks on the partial tiles that hold only what they add (``tile.from``, audit/estiles.py): crash and retry
windows of the sink, crafted documents in the checkpoint stream, and the reader's searches, against the real
Elasticsearch. Each asserts what a user checks: ``verify --es``'s finding, ``prove --es``'s one line, the sink's
TAMPER stop, or a clean ``verify`` after the rerun."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import helpers

from audit.sinks.elasticsearch import (
    ElasticsearchSink,
    EsError,
    Item,
    checkpoint_stream_name,
)
from audit.tiles import tile_path
from tests.audit.kit import TEE_AUDIT, es_setup, keys, shipped_seq, write_journal
from tests.audit.test_es_tiles import EsLog, forged_tile, tamper_reason

pytestmark = pytest.mark.elasticsearch


@pytest.fixture
def eslog(tmp_path: Path, elasticsearch: str, es_namespace: str) -> EsLog:
    log = EsLog(tmp_path, elasticsearch, es_namespace)
    assert log.ship(300) == 0  # tile 1 of level 0 is 44 wide, stored whole (its first width)
    return log


def tile_hits(log: EsLog) -> list[dict[str, Any]]:
    return [hit for hit in log.docs("tile.level") if hit["_source"]["chain"]["id"] == "h1"]


def missing_links(log: EsLog) -> list[str]:
    """The ``tile.from`` widths no document of the same tile holds: a chain a reader cannot join."""
    stored = {(t["level"], t["index"], t["width"]) for t in (h["_source"]["tile"] for h in tile_hits(log))}
    return [tile_path(level, index, width) for level, index, width, start in
            ((t["level"], t["index"], t["width"], t.get("from", 0)) for t in (h["_source"]["tile"]
                                                                                for h in tile_hits(log)))
            if start and (level, index, start) not in stored]


def finding_kinds(report: dict[str, Any]) -> list[str]:
    return [f["kind"] for f in report["findings"]]


# -- the sink's retry windows ---------------------------------------------------------------------------------
def test_a_tile_bulk_whose_answer_was_lost_is_retried_without_a_false_tamper(
        eslog: EsLog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The tile bulk of the checkpoint at 500 is applied but its answer is lost (a timeout): the shipper retries
    the same batch 0.4 s later and meets its own ``1.p/244`` (from 144), which it must join to ``1.p/144``, written
    by the flush at 400 and not refreshed since (an explicit ``refresh_interval`` keeps the shard out of
    search-idle). The join reads by search: it holds because the retry's replay check refreshes both streams."""
    stream = checkpoint_stream_name(eslog.stream)
    eslog.es.indices.put_settings(index=stream, settings={"index": {"refresh_interval": "60s"}})
    real_send, lost = ElasticsearchSink._send, []

    def send(self: ElasticsearchSink, items: list[Item]) -> list[tuple[str, str]]:
        present = real_send(self, items)
        if not lost and any(item.ident == f"h1:{tile_path(0, 1, 244)}" for item in items):
            lost.append(True)
            raise EsError("timeout", "the answer of a bulk that was applied is lost", True)
        return present

    monkeypatch.setattr(ElasticsearchSink, "_send", send)
    assert eslog.ship(200) == 0, tamper_reason(caplog)
    assert lost and not [r for r in caplog.records if "TAMPER" in r.getMessage()]
    assert missing_links(eslog) == []
    code, report = eslog.verify()
    assert (code, report["findings"]) == (0, []), report


def test_a_tile_bulk_cut_before_its_level_0_tile_then_rejected_is_completed_by_the_retry(
        eslog: EsLog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The flush that grows level 1 (``tile/1/000.p/3`` from 1) gets through up to its level-0 partial tile, then
    Elasticsearch answers 429: the retry meets the level-1 delta and the full tiles (409, joined and compared),
    writes the partial tile, and every ``from`` names a stored width."""
    real_send, cut = ElasticsearchSink._send, []

    def send(self: ElasticsearchSink, items: list[Item]) -> list[tuple[str, str]]:
        if not cut and any(":tile/1/" in item.ident for item in items):
            cut.append([item.ident for item in items])
            real_send(self, items[:-1])
            raise EsError("rejected", "HTTP 429 on the last item", True)
        return real_send(self, items)

    monkeypatch.setattr(ElasticsearchSink, "_send", send)
    assert eslog.ship(500) == 0, tamper_reason(caplog)
    assert cut and cut[0][-1].startswith("h1:tile/0/"), cut
    assert not [r for r in caplog.records if "TAMPER" in r.getMessage()]
    level1 = {h["_id"]: h["_source"]["tile"].get("from", 0) for h in tile_hits(eslog)
              if h["_source"]["tile"]["level"] == 1}
    assert level1 == {f"h1:{tile_path(1, 0, 1)}": 0, f"h1:{tile_path(1, 0, 3)}": 1}, level1
    assert missing_links(eslog) == []
    code, report = eslog.verify()
    assert (code, report["findings"]) == (0, []), report


def test_a_replay_after_a_rollover_writes_no_second_copy_of_the_stored_edge(eslog: EsLog) -> None:
    """The cursor is lost and the checkpoint stream rolled over: the replay's first batch adds no record to the
    tree opened at 400, yet its level 0 counted as changed, and ``1.p/144`` (stored from 44) went out again,
    whole. In the new backing index no 409 stopped it: two documents with other content under one ``_id``."""
    assert eslog.ship(100) == 0
    eslog.es.indices.rollover(alias=checkpoint_stream_name(eslog.stream))
    (eslog.tmp / "spool" / "cursor-elasticsearch.json").unlink()
    assert eslog.ship(0) == 0
    copies = [h["_source"]["tile"].get("from", 0) for h in tile_hits(eslog) if h["_id"] == f"h1:{tile_path(0, 1, 144)}"]
    assert copies == [44]
    assert eslog.ship(100) == 0
    assert missing_links(eslog) == []
    code, report = eslog.verify()
    assert (code, report["findings"]) == (0, []), report


def test_kill_9_with_rollovers_of_the_checkpoint_stream_leaves_every_from_link_stored(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    """Kills at several points of a shipper flushing every 10 records, the checkpoint stream rolled over after
    each (a replay then creates into a new backing index, where no 409 tells it what is stored), the cursor lost
    every other time: every ``from`` names a stored width, no tile has two contents, verify is clean."""
    key, public = keys(tmp_path / "keys")
    journal, spool, events = tmp_path / "journal.jsonl", tmp_path / "spool", 1200
    write_journal(journal, events)
    es_setup(elasticsearch, es_namespace)
    log = EsLog(tmp_path, elasticsearch, es_namespace)
    cmd = [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", elasticsearch, "--es.namespace",
           es_namespace, "--signing-key", str(key), "--spool.dir", str(spool), "--chain", "h1",
           "--checkpoint.every-records", "10", "--es.batch-size", "25", "--log.level", "error"]
    for i in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mark = (i + 1) * events // 5 + 7 * i
        while proc.poll() is None and shipped_seq(spool) < mark:
            time.sleep(0.002)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log.es.indices.rollover(alias=checkpoint_stream_name(log.stream))
        cursor = spool / "cursor-elasticsearch.json"
        if i % 2 == 0 and cursor.exists():
            cursor.unlink()
    assert subprocess.run(cmd, check=False, timeout=300).returncode == 0
    assert missing_links(log) == []
    contents: dict[str, set[str]] = {}
    for hit in tile_hits(log):
        tile = hit["_source"]["tile"]
        digest = hashlib.sha256(tile["hashes"].encode()).hexdigest()[:8]
        contents.setdefault(hit["_id"], set()).add(f"{hit['_index'][-6:]} from {tile.get('from', 0)}: {digest}")
    assert {ident: seen for ident, seen in contents.items() if len(seen) > 1} == {}
    code, report = log.verify()
    assert (code, report["records"], report["findings"]) == (0, events, []), report
    del public


# -- crafted documents ---------------------------------------------------------------------------------------
def _delta(width: int, start: Any, count: int) -> dict[str, Any]:
    doc = forged_tile(0, 1, width)
    doc["tile"].update({"from": start, "hashes": base64.b64encode(b"\x07" * 32 * count).decode()})
    return doc


@pytest.mark.parametrize(("name", "doc"), [
    ("from as a string", _delta(100, "44", 56)),
    ("from negative", _delta(100, -1, 101)),
    ("from equal to the width", _delta(100, 100, 0)),
    ("from a boolean", _delta(100, True, 99)),
    ("from past the width", _delta(100, 300, 0)),
    ("a full tile with from", _delta(256, 44, 212)),
    ("hashes not a string", {"chain": {"id": "h1"}, "tile": {**_delta(100, 44, 56)["tile"], "hashes": [1]}}),
])
def test_a_crafted_from_document_is_never_a_traceback(eslog: EsLog, name: str, doc: dict[str, Any]) -> None:
    """Planted as the widest tile of an index: not a tile of ours, so that index has no tile (``bad-tiles``)."""
    tile = doc["tile"]
    eslog.plant(f"h1:{tile_path(0, tile['index'], tile['width'])}", doc)
    code, report = eslog.verify()
    assert code == 1 and "bad-tiles" in finding_kinds(report), (name, report)
    proc = eslog.prove(280 if tile["index"] == 1 else 17)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
        (name, proc.stderr)


def test_a_forged_delta_past_the_records_is_never_read_and_stops_the_sink(
        eslog: EsLog, caplog: pytest.LogCaptureFixture) -> None:
    """Well-formed: ``1.p/100`` from our 44 with 56 forged hashes, the widest of its index. Joined, its first 44
    hashes are ours; the 56 forged ones stand for records that do not exist, so no checkpoint reaches them:
    verify and receipts read the first 44 only (a whole ``1.p/100`` copying our 44 is the same, as before
    ``from``). The sink, which would build on them, refuses: they describe more records than are stored."""
    eslog.plant(f"h1:{tile_path(0, 1, 100)}", _delta(100, 44, 56))
    code, report = eslog.verify()
    assert (code, report["findings"]) == (0, []), report
    receipt = eslog.tmp / "receipt"
    assert eslog.prove(280, "--out", str(receipt)).returncode == 0
    assert eslog.verify_proof(receipt).returncode == 0
    assert eslog.ship(56) != 0
    assert "the tiles describe 356 records, the data stream holds 300" in tamper_reason(caplog)


def test_a_forged_delta_the_sink_opens_its_tree_on_is_bad_tiles(eslog: EsLog) -> None:
    """Records to 400 are stored, their tiles not (a crash in between: here ``1.p/144`` deleted). The host plants
    ``1.p/120`` from our 44 with 76 forged hashes, within the records, so the sink opens its tree there and grows
    its next tiles from 120 on. The sink cannot tell (it reads no record below the edge); verify and prove can."""
    assert eslog.ship(100) == 0
    ours = next(h for h in tile_hits(eslog) if h["_id"] == f"h1:{tile_path(0, 1, 144)}")
    eslog.es.delete(index=ours["_index"], id=ours["_id"], refresh=True)
    eslog.plant(f"h1:{tile_path(0, 1, 120)}", _delta(120, 44, 76))
    assert eslog.ship(100) == 0
    grown = next(h for h in tile_hits(eslog) if h["_id"] == f"h1:{tile_path(0, 1, 244)}")
    assert grown["_source"]["tile"]["from"] == 120
    code, report = eslog.verify()
    assert code == 1 and finding_kinds(report) == ["bad-tiles"], report
    proc = eslog.prove(330)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "record 330 and the tiles do not lead to the checkpoint's root" in proc.stderr, proc.stderr


def test_a_forged_delta_within_the_records_is_bad_tiles_and_no_receipt(eslog: EsLog) -> None:
    """Our ``1.p/144`` grows from ``1.p/44``. After a rollover (an ``_id`` is unique per backing index only) a
    second ``1.p/144``, from 44 with 100 forged hashes: the reader may join either; it never gives forged bytes."""
    assert eslog.ship(100) == 0
    eslog.es.indices.rollover(alias=checkpoint_stream_name(eslog.stream))
    eslog.plant(f"h1:{tile_path(0, 1, 144)}", _delta(144, 44, 100))
    code, report = eslog.verify()
    proc = eslog.prove(380)
    assert "Traceback" not in proc.stderr, proc.stderr
    if code == 1:
        assert finding_kinds(report) == ["bad-tiles"], report
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "record 380 and the tiles do not lead to the checkpoint's root" in proc.stderr, proc.stderr
    else:  # the reader joined ours: what it gives holds
        assert report["findings"] == [] and proc.returncode == 0, (report, proc.stderr)


def test_a_forged_base_under_our_delta_is_bad_tiles(eslog: EsLog) -> None:
    """Our ``1.p/144`` grows from ``1.p/44``. A second ``1.p/44`` with forged hashes, created into a new backing
    index after a rollover (an ``_id`` is unique per backing index only), may be the one the reader joins: whichever
    it takes, it never believes forged bytes."""
    assert eslog.ship(100) == 0
    eslog.es.indices.rollover(alias=checkpoint_stream_name(eslog.stream))
    eslog.plant(f"h1:{tile_path(0, 1, 44)}", forged_tile(0, 1, 44))
    code, report = eslog.verify()
    assert code in (0, 1) and set(finding_kinds(report)) <= {"bad-tiles"}, report
    proc = eslog.prove(380)
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr
    if code == 1:
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    else:  # the reader joined ours: the receipt it made holds
        receipt = eslog.tmp / "receipt"
        assert eslog.prove(380, "--out", str(receipt)).returncode == 0
        assert eslog.verify_proof(receipt).returncode == 0


# -- the reader's searches -----------------------------------------------------------------------------------
def test_a_chain_of_255_one_hash_deltas_is_joined(tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    """A checkpoint per record: ``0.p/255`` grows from 254, from 253, ... from 1, 254 documents under it, the
    longest chain there can be. The reader's one search for them (256 hits) finds them all, whatever else the
    stream holds."""
    log = EsLog(tmp_path, elasticsearch, es_namespace, es_batch_size=1)
    write_journal(log.journal, 255)
    from tests.audit.kit import ship_once

    assert ship_once([log.journal], log.key, tmp_path / "spool", es=log.url, namespace=log.namespace, every=1,
                     es_batch_size=1) == 0
    level0 = {h["_source"]["tile"]["width"]: h["_source"]["tile"].get("from", 0) for h in tile_hits(log)
              if h["_source"]["tile"]["level"] == 0}
    assert level0 == {w: w - 1 for w in range(1, 256)}
    code, report = log.verify("--checkpoint-every-records", "1")
    assert (code, report["findings"]) == (0, []), report
    receipt = tmp_path / "receipt"
    proc = log.prove(0, "--out", str(receipt))
    assert proc.returncode == 0, proc.stderr
    assert log.verify_proof(receipt).returncode == 0
    # 300 documents with other _ids but the content of width 254, and a second copy of each of ours created after
    # a rollover (an _id is unique per backing index only): more than 256 hits, but not of the search for the links
    stream = checkpoint_stream_name(log.stream)
    ours = [hit for hit in tile_hits(log) if hit["_source"]["tile"]["level"] == 0]
    helpers.bulk(log.es, ({"_op_type": "create", "_index": stream, "_id": f"crowd-{i}", "@timestamp": "2026-11-28T00:00:00Z",
                           **forged_tile(0, 0, 254)} for i in range(300)), refresh=True)
    log.es.indices.rollover(alias=stream)
    helpers.bulk(log.es, ({"_op_type": "create", "_index": stream, "_id": hit["_id"], **hit["_source"]}
                          for hit in ours), refresh=True)
    code, report = log.verify("--checkpoint-every-records", "1")
    assert (code, report["findings"]) == (0, []), report
    assert log.prove(0, "--out", str(receipt)).returncode == 0 and log.verify_proof(receipt).returncode == 0
    # a link gone from both backing indices: no join, never a wrong one, and the message names the broken link
    for hit in tile_hits(log):
        if hit["_id"] == f"h1:{tile_path(0, 0, 100)}":
            log.es.delete(index=hit["_index"], id=hit["_id"], refresh=True)
    code, report = log.verify("--checkpoint-every-records", "1")
    assert code == 1 and finding_kinds(report) == ["bad-tiles"], report
    proc = log.prove(0)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "no tile tile/0/000.p/100 in Elasticsearch, which tile/0/000.p/101 grows from" in lines[0], proc.stderr


def test_a_malformed_document_as_the_rightmost_tile_is_a_finding(eslog: EsLog) -> None:
    """Sorted first where the reader asks for the tree's size (the rightmost level-0 tile), a document that is not
    a tile of ours: the size read is not the tiles' own; verify must say so, prove refuse in one line."""
    eslog.plant("planted", {"chain": {"id": "h1"}, "tile": {"level": 0, "index": 99, "width": 1, "hashes": "AA=="}})
    code, report = eslog.verify()
    assert code == 1 and "bad-tiles" in finding_kinds(report), report
    proc = eslog.prove(17)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
