"""The Elasticsearch sink: data stream naming, template and lifecycle, exactly-once ids, per-item error handling."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from audit.sinks.elasticsearch import EsError, _check_items, data_stream_name
from tests.audit.kit import TEE_AUDIT, keys, ship_once, write_journal


def _item(status: int, error_type: str = "") -> dict:
    return {"create": {"_id": "h1:1", "status": status, "error": {"type": error_type, "reason": "x"}}}


def test_created_and_already_present_items_are_success() -> None:
    _check_items([_item(201), _item(409, "version_conflict_engine_exception")])


def test_rejected_or_failing_items_are_retryable() -> None:
    for status, reason in ((429, "rejected"), (503, "server")):
        with pytest.raises(EsError) as err:
            _check_items([_item(201), _item(status, "x")])
        assert (err.value.reason, err.value.retryable) == (reason, True)


def test_mapping_error_stops_the_line_instead_of_skipping_a_record() -> None:
    with pytest.raises(EsError) as err:
        _check_items([_item(429, "es_rejected_execution_exception"), _item(400, "mapper_parsing_exception")])
    assert (err.value.reason, err.value.retryable) == ("mapping", False)


@pytest.mark.elasticsearch
def test_records_land_in_a_data_stream_with_template_lifecycle_and_deterministic_ids(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    key, _ = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 25)
    assert ship_once([journal], key, tmp_path / "spool", es=elasticsearch, namespace=es_namespace,
                     es_retention="7d") == 0
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
    base = [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", elasticsearch, "--signing-key",
            str(key), "--chain", "h1"]
    info = subprocess.run([*base, "--spool.dir", str(tmp_path / "s1"), "--es.namespace", es_namespace],
                          capture_output=True, text=True, timeout=120, check=True).stderr
    assert "--once: everything is chained" in info
    assert "_bulk" not in info
    debug = subprocess.run([*base, "--spool.dir", str(tmp_path / "s2"), "--es.namespace", es_namespace + "d",
                            "--log.level", "debug"], capture_output=True, text=True, timeout=120, check=True).stderr
    assert "_bulk" in debug
