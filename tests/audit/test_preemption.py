"""Pre-emption (issue 10 item 1): whoever can write to a sink pre-creates the slots of records and checkpoints not
yet shipped. "Already there" must be read back and compared: our own earlier write is delivered, anything else is a
tamper finding that stops the sink, never a record silently skipped."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from audit.canonical import canonicalize
from audit.chain import Head, seal
from audit.sinks import SinkConflict
from audit.sinks.elasticsearch import (
    ElasticsearchSink,
    EsError,
    Item,
    _check_items,
    checkpoint_stream_name,
    data_stream_name,
)
from audit.sinks.localstore import LocalStore
from tests.audit.forge import foreign_note, forged_records, last_stored
from tests.audit.kit import es_setup, keys, ship_once, write_journal


def _stored_lines(store: Path) -> list[bytes]:
    return [line for seg in sorted((store / "h1").glob("records-*.jsonl")) for line in seg.read_bytes().splitlines()]


def _tamper_logged(caplog: pytest.LogCaptureFixture, sink: str) -> bool:
    return any(r.levelno == logging.ERROR and r.getMessage().startswith("TAMPER") and getattr(r, "sink", "") == sink
               for r in caplog.records)


# -- local store ----------------------------------------------------------------------------------------------------
def test_forged_records_appended_past_the_store_end_are_a_conflict_not_delivered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key, _ = keys(tmp_path / "keys")
    journal, spool, store = tmp_path / "journal.jsonl", tmp_path / "spool", tmp_path / "store"
    write_journal(journal, 10)
    assert ship_once([journal], key, spool, store=store) == 0
    forged = forged_records(last_stored(store), 5)
    with open(max((store / "h1").glob("records-*.jsonl")), "ab") as fh:
        fh.write(b"".join(doc + b"\n" for _, doc in forged))
    write_journal(journal, 5, start=10)  # the genuine records 10..14 are still to come

    assert ship_once([journal], key, spool, store=store) == 1
    assert _tamper_logged(caplog, "localstore")
    assert _stored_lines(store)[10:] == [doc for _, doc in forged]  # nothing appended past the forged slots


def test_a_copied_checkpoint_note_in_the_slot_of_the_next_one_is_a_conflict(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key, _ = keys(tmp_path / "keys")
    journal, spool, store = tmp_path / "journal.jsonl", tmp_path / "spool", tmp_path / "store"
    write_journal(journal, 10)
    assert ship_once([journal], key, spool, store=store) == 0
    notes = store / "h1" / "checkpoints"
    shutil.copy(notes / f"{10:020d}.note", notes / f"{20:020d}.note")  # a genuine signature, for another size
    write_journal(journal, 10, start=10)

    assert ship_once([journal], key, spool, store=store) == 1
    assert _tamper_logged(caplog, "localstore")
    assert (notes / f"{20:020d}.note").read_bytes() == (notes / f"{10:020d}.note").read_bytes()


def test_a_replay_of_what_the_store_holds_is_delivered_and_a_different_one_is_not(tmp_path: Path) -> None:
    """Replays (a crash before the cursor write) compare by content: equal passes, one changed byte stops."""
    records, head, heads = [], Head("h1"), []
    for i in range(6):
        heads.append(head)
        doc, head = seal({"@timestamp": "2026-11-01T00:00:00Z", "n": i}, head)
        records.append((i, canonicalize(doc)))
    LocalStore(tmp_path, "h1").write(records, [])
    again = LocalStore(tmp_path, "h1")  # a restart: the spool replays from an older cursor
    again.write(records[2:], [])
    other = (3, canonicalize(seal({"@timestamp": "2026-11-01T00:00:00Z", "n": 33}, heads[3])[0]))
    with pytest.raises(SinkConflict) as err:  # the store holds another seq 3 than the one being delivered
        LocalStore(tmp_path, "h1").write([records[2], other], [])
    assert err.value.slots == ["seq 3"]
    assert _stored_lines(tmp_path) == [doc for _, doc in records]


def test_a_segment_added_under_a_running_store_is_read_and_compared(tmp_path: Path) -> None:
    records, head = [], Head("h1")
    for i in range(8):
        doc, head = seal({"@timestamp": "2026-11-01T00:00:00Z", "n": i}, head)
        records.append((i, canonicalize(doc)))
    store = LocalStore(tmp_path, "h1")
    store.write(records[:4], [])
    forged = forged_records(json.loads(records[3][1]), 4)
    (tmp_path / "h1" / f"records-{4:020d}.jsonl").write_bytes(b"".join(doc + b"\n" for _, doc in forged))
    with pytest.raises(SinkConflict) as err:
        store.write(records[4:], [])
    assert err.value.slots == [f"seq {i}" for i in range(4, 8)]
    assert _stored_lines(tmp_path) == [doc for _, doc in records[:4] + forged]


def test_a_store_ending_in_a_line_that_is_not_a_record_is_a_conflict_not_a_crash(tmp_path: Path) -> None:
    LocalStore(tmp_path, "h1").write([(0, canonicalize(seal({"@timestamp": "2026-11-01T00:00:00Z"},
                                                                Head("h1"))[0]))], [])
    with open(tmp_path / "h1" / f"records-{0:020d}.jsonl", "ab") as fh:
        fh.write(b"not a record\n")
    store = LocalStore(tmp_path, "h1")
    with pytest.raises(SinkConflict, match="not a record"):
        store.write([(1, b"{}")], [])


def _sealed(count: int) -> list[tuple[int, bytes]]:
    records, head = [], Head("h1")
    for i in range(count):
        doc, head = seal({"@timestamp": "2026-11-01T00:00:00Z", "n": i}, head)
        records.append((i, canonicalize(doc)))
    return records


def _write_within(store: LocalStore, records: list[tuple[int, bytes]], checkpoints: list[dict]) -> BaseException:
    """What ``store.write`` raises, or a ``TimeoutError`` if it is still blocked after 10 s (a stalled shipper)."""
    outcome: list[BaseException] = [TimeoutError("store.write still blocked after 10 s")]

    def run() -> None:
        try:
            store.write(records, checkpoints)
            outcome[0] = AssertionError("store.write returned")
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever it is
            outcome[0] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    return outcome[0]


def test_a_fifo_in_the_slot_of_a_checkpoint_note_is_a_conflict_not_a_stall(tmp_path: Path) -> None:
    records = _sealed(2)
    store = LocalStore(tmp_path, "h1")
    store.write(records, [])
    os.mkfifo(tmp_path / "h1" / "checkpoints" / f"{2:020d}.note")  # opening it for reading blocks forever
    note = {"size": 2, "hash": json.loads(records[1][1])["chain"]["hash"], "note": "a note\n", "t": 0.0}
    outcome = _write_within(store, [], [note])
    assert isinstance(outcome, SinkConflict), outcome
    assert outcome.slots == [str(tmp_path / "h1" / "checkpoints" / f"{2:020d}.note")]


def test_a_note_symlinked_to_an_endless_device_is_a_conflict_not_a_memory_blowup(tmp_path: Path) -> None:
    records = _sealed(2)
    store = LocalStore(tmp_path, "h1")
    store.write(records, [])
    (tmp_path / "h1" / "checkpoints" / f"{2:020d}.note").symlink_to("/dev/zero")
    note = {"size": 2, "hash": json.loads(records[1][1])["chain"]["hash"], "note": "a note\n", "t": 0.0}
    outcome = _write_within(store, [], [note])
    assert isinstance(outcome, SinkConflict), outcome
    assert "symlink" in str(outcome)


def test_a_fifo_segment_among_the_stored_ones_is_a_conflict_on_replay_not_a_stall(tmp_path: Path) -> None:
    records = _sealed(6)
    LocalStore(tmp_path, "h1", segment_bytes=1).write(records[:3], [])  # one segment per record batch
    LocalStore(tmp_path, "h1", segment_bytes=1).write(records[3:], [])
    os.mkfifo(tmp_path / "h1" / f"records-{2:020d}.jsonl")  # sorts between the two real segments
    outcome = _write_within(LocalStore(tmp_path, "h1"), records[2:], [])  # a replay reads the store back
    assert isinstance(outcome, SinkConflict), outcome
    assert "not a regular file" in str(outcome)


def test_a_symlink_planted_at_a_notes_temporary_name_does_not_redirect_the_write(tmp_path: Path) -> None:
    records = _sealed(2)
    store = LocalStore(tmp_path / "store", "h1")
    store.write(records, [])
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (tmp_path / "store" / "h1" / "checkpoints" / f"{2:020d}.note.tmp").symlink_to(victim)
    note = {"size": 2, "hash": json.loads(records[1][1])["chain"]["hash"], "note": "a note\n", "t": 0.0}
    store.write([], [note])
    assert victim.read_bytes() == b"precious\n"


# -- Elasticsearch --------------------------------------------------------------------------------------------------
def _create(es: Elasticsearch, stream: str, docs: list[tuple[str, bytes]]) -> None:
    body = b"".join(b'{"create":{"_id":"%s"}}\n%s\n' % (ident.encode(), doc) for ident, doc in docs)
    result = es.bulk(index=stream, operations=body, refresh=True)
    assert not result["errors"], result["items"][:2]


def _records(es: Elasticsearch, stream: str) -> dict[str, dict]:
    es.indices.refresh(index=stream)
    hits = es.search(index=stream, size=1000, query={"exists": {"field": "chain.seq"}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


@pytest.mark.elasticsearch
def test_forged_next_records_pre_created_in_elasticsearch_stop_the_sink(
        tmp_path: Path, elasticsearch: str, es_namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    key, _ = keys(tmp_path / "keys")
    journal, spool = tmp_path / "journal.jsonl", tmp_path / "spool"
    write_journal(journal, 10)
    assert ship_once([journal], key, spool, es=elasticsearch, namespace=es_namespace) == 0
    es, stream = Elasticsearch(elasticsearch), data_stream_name(es_namespace)
    head = _records(es, stream)["h1:9"]
    forged = forged_records(head, 5)
    _create(es, stream, [(f"h1:{seq}", doc) for seq, doc in forged])
    write_journal(journal, 5, start=10)

    assert ship_once([journal], key, spool, es=elasticsearch, namespace=es_namespace) == 1
    assert _tamper_logged(caplog, "elasticsearch")
    stored = _records(es, stream)
    assert len(stored) == 15 and stored["h1:12"]["message"] == "nothing happened 2"


@pytest.mark.elasticsearch
def test_a_forged_checkpoint_slot_in_elasticsearch_stops_the_sink(
        tmp_path: Path, elasticsearch: str, es_namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    key, _ = keys(tmp_path / "keys")
    journal, spool = tmp_path / "journal.jsonl", tmp_path / "spool"
    write_journal(journal, 10)
    assert ship_once([journal], key, spool, es=elasticsearch, namespace=es_namespace) == 0
    es, stream = Elasticsearch(elasticsearch), data_stream_name(es_namespace)
    note = foreign_note(tmp_path / "other", "h1", 20, "ab" * 32)
    slot = b'{"@timestamp":"2026-11-01T00:00:00Z","chain":{"id":"h1"},"checkpoint":{"size":20,"root":"%s",' \
           b'"note":%s}}' % (b"ab" * 32, canonicalize(note))
    _create(es, stream, [("h1:checkpoint:20", slot)])
    write_journal(journal, 10, start=10)

    assert ship_once([journal], key, spool, es=elasticsearch, namespace=es_namespace) == 1
    assert _tamper_logged(caplog, "elasticsearch")


@pytest.mark.elasticsearch
def test_a_409_is_read_back_equal_is_delivered_other_content_is_a_conflict(
        elasticsearch: str, es_namespace: str) -> None:
    """The running sink's normal path (no replay): a create meeting 409 in the write index is compared."""
    es, stream = Elasticsearch(elasticsearch), data_stream_name(es_namespace)
    es_setup(elasticsearch, es_namespace)
    records, head = [], Head("h1")
    for i in range(10):
        doc, head = seal({"@timestamp": "2026-11-01T00:00:00Z", "message": f"m{i}"}, head)
        records.append((i, canonicalize(doc)))
    sink = ElasticsearchSink(Elasticsearch(elasticsearch), "h1", es_namespace)
    sink.write(records[:5], [])
    sink.write(records[:5], [])  # our own records met again (409): delivered
    forged = forged_records(_records(es, stream)["h1:4"], 2)
    _create(es, stream, [(f"h1:{seq}", doc) for seq, doc in forged])
    with pytest.raises(SinkConflict) as err:
        sink.write(records[5:], [])
    assert err.value.slots == ["h1:5", "h1:6"]


def _sealed_messages(count: int) -> list[tuple[int, bytes]]:
    records, head = [], Head("h1")
    for i in range(count):
        doc, head = seal({"@timestamp": "2026-11-01T00:00:00Z", "message": f"m{i}"}, head)
        records.append((i, canonicalize(doc)))
    return records



@pytest.mark.elasticsearch
def test_records_created_through_an_alias_squatting_the_stream_name_are_not_delivered(
        elasticsearch: str, es_namespace: str) -> None:
    """Before the first write, someone with cluster rights makes the stream's name an alias of a plain index whose
    ``_source`` leaves out ``message``: the creates answer 201 "created", but nothing stored there is our record."""
    es, stream = Elasticsearch(elasticsearch), data_stream_name(es_namespace)
    es_setup(elasticsearch, es_namespace)
    es.indices.create(index=f"squat-{es_namespace}", mappings={"_source": {"excludes": ["message"]}},
                      aliases={stream: {"is_write_index": True}})
    sink = ElasticsearchSink(Elasticsearch(elasticsearch), "h1", es_namespace)
    with pytest.raises(EsError) as err:
        sink.write(_sealed_messages(2), [])
    assert err.value.reason == "not_stored"


def test_a_create_answered_200_noop_is_not_delivered() -> None:
    """What Elasticsearch answers for a create an ingest pipeline ``drop``s (the test distribution has no
    ingest-common module, so the answer is built here): success-looking, nothing stored."""
    ident = "h1:0"
    items = [{"create": {"_index": ".ds-logs-tee.audit-x-2026.11.28-000001", "_id": ident, "_version": -3,
                         "result": "noop", "status": 200}}]
    with pytest.raises(EsError) as err:
        _check_items(items, [Item(ident, "logs-tee.audit-x", b"")])
    assert err.value.reason == "not_stored"


def test_a_bulk_answer_missing_an_item_is_not_delivered() -> None:
    items = [{"create": {"_index": ".ds-logs-tee.audit-x-2026.11.28-000001", "_id": "h1:0", "result": "created",
                         "status": 201}}]
    with pytest.raises(EsError) as err:
        _check_items(items, [Item(i, "logs-tee.audit-x", b"") for i in ("h1:0", "h1:1")])
    assert err.value.reason == "bulk_answer"


@pytest.mark.elasticsearch
def test_our_checkpoint_note_in_a_document_with_an_added_field_is_a_conflict_on_replay(
        elasticsearch: str, es_namespace: str) -> None:
    """Size, root and genuine note all equal, one field added: a replay meeting it must not take it as ours."""
    es, stream = Elasticsearch(elasticsearch), data_stream_name(es_namespace)
    es_setup(elasticsearch, es_namespace)
    records = _sealed_messages(2)
    root = json.loads(records[1][1])["chain"]["hash"]
    cp = {"size": 2, "hash": root, "note": "h1\n2\nsigned\n", "t": 1_790_000_000.0}
    ElasticsearchSink(Elasticsearch(elasticsearch), "h1", es_namespace).write(records, [cp])
    checkpoints = checkpoint_stream_name(stream)  # checkpoints live in their own stream (docs/audit.md)
    es.indices.refresh(index=checkpoints)
    hit = es.search(index=checkpoints, query={"ids": {"values": ["h1:checkpoint:2"]}},
                    seq_no_primary_term=True)["hits"]["hits"][0]
    es.index(index=hit["_index"], id=hit["_id"], document={**hit["_source"], "message": "approved by audit"},
             if_seq_no=hit["_seq_no"], if_primary_term=hit["_primary_term"], refresh=True)
    with pytest.raises(SinkConflict) as err:  # a restart replaying the same batch
        ElasticsearchSink(Elasticsearch(elasticsearch), "h1", es_namespace).write(records, [cp])
    assert err.value.slots == ["h1:checkpoint:2"]


def test_a_409_answered_from_an_index_outside_the_stream_is_not_delivered() -> None:
    """A 409 names where the ``_id`` exists; outside the stream's backing indices it is not our slot."""
    items = [{"create": {"_index": "squat-x", "_id": "h1:0", "status": 409,
                         "error": {"type": "version_conflict_engine_exception"}}}]
    with pytest.raises(EsError) as err:
        _check_items(items, [Item("h1:0", "logs-tee.audit-x", b"")])
    assert err.value.reason == "not_stored"


@pytest.mark.elasticsearch
def test_a_chain_hash_nested_in_an_event_is_not_taken_for_the_records_own(
        elasticsearch: str, es_namespace: str) -> None:
    """An event may carry ``agent.chain.hash`` (sorted before the top-level ``chain`` in RFC 8785 bytes). Naming
    there the hash of a forged record pre-created in the slot must not make the forgery pass for ours."""
    es, stream = Elasticsearch(elasticsearch), data_stream_name(es_namespace)
    es_setup(elasticsearch, es_namespace)
    records = _sealed_messages(2)
    sink = ElasticsearchSink(Elasticsearch(elasticsearch), "h1", es_namespace)
    sink.write(records, [])
    forged = forged_records(json.loads(records[1][1]), 1)
    _create(es, stream, [("h1:2", forged[0][1])])
    last = json.loads(records[1][1])["chain"]
    event = {"@timestamp": "2026-11-01T00:00:00Z", "agent": {"chain": {"hash": json.loads(forged[0][1])["chain"]
                                                                       ["hash"]}}}
    ours = canonicalize(seal(event, Head("h1", 2, last["hash"]))[0])
    with pytest.raises(SinkConflict) as err:
        sink.write([(2, ours)], [])
    assert err.value.slots == ["h1:2"]
