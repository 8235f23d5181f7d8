"""The Elasticsearch sink: data stream naming, template and lifecycle, exactly-once ids, per-item error handling."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from opentelemetry.trace import NoOpTracer

from audit.canonical import canonicalize
from audit.chain import Head, seal
from audit.ship import SinkRunner
from audit.sinks.elasticsearch import ElasticsearchSink, EsError, Item, _check_items, data_stream_name
from audit.spool import Spool, record_entry
from audit.telemetry import Telemetry
from tests.audit.kit import TEE_AUDIT, es_setup, keys, ship_once, write_journal

_STREAM = "logs-tee.audit-default"


_BACKING = f".ds-{_STREAM}-2026.11.28-000001"


def _sent(*ids: str) -> list[Item]:
    return [Item(ident, _STREAM, b"") for ident in ids]


def _item(status: int, error_type: str = "", ident: str = "h1:1") -> dict:
    if status == 201:
        return {"create": {"_index": _BACKING, "_id": ident, "result": "created", "status": 201}}
    return {"create": {"_index": _BACKING, "_id": ident, "status": status, "error": {"type": error_type,
                                                                                       "reason": "x"}}}


def test_created_items_pass_and_already_present_ones_are_handed_back_to_be_read() -> None:
    conflict = _item(409, "version_conflict_engine_exception", "h1:2")
    assert _check_items([_item(201), conflict], _sent("h1:1", "h1:2")) == [(_BACKING, "h1:2")]


def test_rejected_or_failing_items_are_retryable() -> None:
    for status, reason in ((429, "rejected"), (503, "server")):
        with pytest.raises(EsError) as err:
            _check_items([_item(201), _item(status, "x", "h1:2")], _sent("h1:1", "h1:2"))
        assert (err.value.reason, err.value.retryable) == (reason, True)


def test_a_201_into_the_failure_store_is_a_failed_write_not_a_shipped_record() -> None:
    """Elasticsearch 9.1+ with the data stream failure store enabled answers a refused document with 201 and
    ``"failure_store": "used"`` (the item shape of the bulk API reference), top-level ``errors`` false. The
    integ-test distribution the tests run has no data-streams module, so this case cannot be produced there."""
    item = {"create": {"_index": ".fs-logs-tee.audit-default-2026.11.28-000002", "_id": "h1:7", "_version": 1,
                       "result": "created", "status": 201, "failure_store": "used"}}
    with pytest.raises(EsError) as err:
        _check_items([_item(201), item], _sent("h1:1", "h1:7"))
    assert (err.value.reason, err.value.retryable) == ("failure_store", False)
    assert ".fs-logs-tee.audit-default" in str(err.value)


def test_mapping_error_stops_the_line_instead_of_skipping_a_record() -> None:
    with pytest.raises(EsError) as err:
        _check_items([_item(429, "es_rejected_execution_exception"), _item(400, "mapper_parsing_exception", "h1:2")],
                     _sent("h1:1", "h1:2"))
    assert (err.value.reason, err.value.retryable) == ("mapping", False)


@pytest.mark.elasticsearch
def test_records_land_in_a_data_stream_with_template_lifecycle_and_deterministic_ids(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    key, _ = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 25)
    es_setup(elasticsearch, es_namespace, retention="7d")
    assert ship_once([journal], key, tmp_path / "spool", es=elasticsearch, namespace=es_namespace, setup=False) == 0
    stream = data_stream_name(es_namespace)
    assert stream == f"logs-tee.audit-{es_namespace}"
    es = Elasticsearch(elasticsearch)
    tpl = es.indices.get_index_template(name=stream)["index_templates"][0]["index_template"]
    assert tpl["index_patterns"] == [stream] and "data_stream" in tpl
    assert tpl["template"]["lifecycle"]["data_retention"] == "7d"
    assert tpl["template"]["settings"]["index"]["mode"] == "standard"
    hits = es.search(index=stream, size=100, query={"exists": {"field": "chain.seq"}})["hits"]["hits"]
    assert sorted(h["_id"] for h in hits) == sorted(f"h1:{i}" for i in range(25))
    assert all(h["_index"].startswith(f".ds-{stream}-") for h in hits)
    # shipping the same spool again (a replay) changes nothing: every create meets a 409
    (tmp_path / "spool" / "cursor-elasticsearch.json").unlink()
    assert ship_once([journal], key, tmp_path / "spool", es=elasticsearch, namespace=es_namespace) == 0
    es.indices.refresh(index=stream)
    assert es.count(index=stream, query={"exists": {"field": "chain.seq"}})["count"] == 25


@pytest.mark.elasticsearch
def test_elasticsearch_requests_are_logged_at_debug_not_info(tmp_path: Path, elasticsearch: str,
                                                             es_namespace: str) -> None:
    key, _ = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 5)
    for namespace in (es_namespace, es_namespace + "d"):
        es_setup(elasticsearch, namespace)
    base = [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", elasticsearch, "--signing-key",
            str(key), "--chain", "h1"]
    info = subprocess.run([*base, "--spool.dir", str(tmp_path / "s1"), "--es.namespace", es_namespace],
                          capture_output=True, text=True, timeout=120, check=True).stderr
    assert "--once: everything is chained" in info
    assert "_bulk" not in info
    debug = subprocess.run([*base, "--spool.dir", str(tmp_path / "s2"), "--es.namespace", es_namespace + "d",
                            "--log.level", "debug"], capture_output=True, text=True, timeout=120, check=True).stderr
    assert "_bulk" in debug


@pytest.mark.elasticsearch
def test_a_bulk_refused_part_way_never_moves_the_cursor_past_the_refused_record(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    """A record Elasticsearch refuses (here one that bypassed the pre-chain check) stops the sink at that record:
    the cursor stays before it, retries send it again, and nothing after it counts as shipped."""
    spool = Spool(tmp_path / "spool", "h1")
    head, entries = Head("h1"), []
    for i in range(10):
        event = {"@timestamp": "2026-11-01T00:00:00Z", "event": "x" if i == 5 else {"action": "a"}}
        doc, head = seal(event, head)
        entries.append(record_entry(i, head.hash, 0.0, None, canonicalize(doc)))
    spool.append(entries)
    es_setup(elasticsearch, es_namespace)
    metrics = Telemetry("h1", [], ["elasticsearch"])
    runner = SinkRunner(ElasticsearchSink(Elasticsearch(elasticsearch), "h1", es_namespace), spool, 100, metrics,
                        NoOpTracer())
    for _ in range(2):
        runner.retry_at = 0.0
        assert runner.step(1.0) is False
        assert runner.cursor.next_seq == 0 and runner.fatal and "mapping" in runner.fatal
    assert metrics.registry.get_sample_value("tee_audit_records_shipped_total", {"sink": "elasticsearch"}) == 0
    assert metrics.registry.get_sample_value("tee_audit_sink_errors_total",
                                             {"sink": "elasticsearch", "reason": "mapping"}) == 2


@pytest.mark.elasticsearch
def test_a_batch_larger_than_one_request_may_be_is_delivered(elasticsearch: str, es_namespace: str) -> None:
    """A hostile journal writer's lines of ~1 MiB (the journal's line limit) in one batch: together over
    Elasticsearch's http.max_content_length (100 MB), which refuses such a request with 413 for good."""
    records, head = [], Head("h1")
    for i in range(105):
        doc, head = seal({"@timestamp": "2026-11-01T00:00:00Z", "blob": f"{i:04d}" + "x" * 1_000_000}, head)
        records.append((i, canonicalize(doc)))
    es_setup(elasticsearch, es_namespace)
    ElasticsearchSink(Elasticsearch(elasticsearch), "h1", es_namespace).write(records, [])
    es, stream = Elasticsearch(elasticsearch), data_stream_name(es_namespace)
    es.indices.refresh(index=stream)
    assert es.count(index=stream)["count"] == 105
