"""The least-privilege roles of docs/elasticsearch/roles.yml, loaded into a real Elasticsearch with its own
security on (HTTPS from elasticsearch-certutil, file realm users): the host's shipper credential can append and
read back, never change, overwrite or delete; the auditor can only read; setup can install the template."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from audit.sinks.elasticsearch import (
    EsError,
    checkpoint_stream_name,
    checkpoint_template,
    connect,
    data_stream_name,
    request,
    template,
)
from tests.fixtures.elasticsearch_secure import SecureEs


def _client(es: SecureEs, user: str, ca_file: Path | None = None):
    return connect(es.url, ca_file=ca_file or es.ca_file, username=user, password_file=es.password_files[user])


def _status(es: SecureEs, user: str, method: str, path: str, body: object = None) -> int:
    try:
        request(_client(es, user), method, path, body)
    except EsError as exc:
        return int(exc.reason.removeprefix("http_")) if exc.reason.startswith("http_") else -1
    return 200


def _record(seq: int) -> dict[str, object]:
    return {"@timestamp": "2026-11-28T10:00:00Z", "message": f"record {seq}",
            "chain": {"id": "host-a", "seq": seq, "prev_hash": "0" * 64, "hash": f"{seq:064x}"}}


@pytest.fixture
def stream(elasticsearch_secure: SecureEs) -> str:
    """A fresh data stream whose template the setup user installed, holding record 0 written by the shipper."""
    namespace = "r" + uuid.uuid4().hex[:10]
    name = data_stream_name(namespace)
    assert _status(elasticsearch_secure, "setup", "PUT", f"/_index_template/{name}", template(namespace, "90d")) == 200
    assert _status(elasticsearch_secure, "setup", "PUT", f"/_index_template/{checkpoint_stream_name(name)}",
                   checkpoint_template(namespace)) == 200
    assert _status(elasticsearch_secure, "shipper", "PUT", f"/{name}/_create/host-a:0?refresh=true", _record(0)) == 200
    return name


def _backing_index(es: SecureEs, stream: str) -> str:
    hits = request(_client(es, "auditor"), "POST", f"/{stream}/_search", {"query": {"match_all": {}}})
    return hits["hits"]["hits"][0]["_index"]


def test_shipper_appends_and_reads_back(elasticsearch_secure: SecureEs, stream: str) -> None:
    assert _status(elasticsearch_secure, "shipper", "PUT", f"/{stream}/_create/host-a:1", _record(1)) == 200
    checkpoint = {"@timestamp": "2026-11-28T10:00:00Z", "chain": {"id": "host-a"},
                  "checkpoint": {"size": 2, "root": "0" * 64, "note": "x"}}
    assert _status(elasticsearch_secure, "shipper", "PUT",
                   f"/{checkpoint_stream_name(stream)}/_create/host-a:checkpoint:2", checkpoint) == 200
    assert _status(elasticsearch_secure, "shipper", "POST", f"/{stream}/_search",
                   {"query": {"term": {"chain.id": "host-a"}}}) == 200


def test_shipper_cannot_overwrite_update_or_delete(elasticsearch_secure: SecureEs, stream: str) -> None:
    es = elasticsearch_secure
    index = _backing_index(es, stream)
    forged = {**_record(0), "message": "rewritten"}
    # Each of these succeeds for the admin user (a backing-index overwrite needs if_seq_no/if_primary_term).
    # _delete_by_query and _update_by_query are absent from this distribution (no reindex module), so they
    # cannot be tried here; they need the "delete" and "index" privileges, which tee_shipper does not hold.
    attempts = {
        "overwrite in the backing index": ("PUT", f"/{index}/_doc/host-a:0?if_seq_no=0&if_primary_term=1", forged),
        "update": ("POST", f"/{index}/_update/host-a:0", {"doc": {"message": "rewritten"}}),
        "delete a record": ("DELETE", f"/{index}/_doc/host-a:0", None),
        "delete the backing index": ("DELETE", f"/{index}", None),
        "rollover": ("POST", f"/{stream}/_rollover", None),
        "rewrite the template": ("PUT", f"/_index_template/{stream}", template("x", "1d")),
    }
    allowed = {what: status for what, (method, path, body) in attempts.items()
               if (status := _status(es, "shipper", method, path, body)) != 403}
    assert not allowed, allowed
    hits = request(_client(es, "admin"), "POST", f"/{stream}/_search", {"query": {"match_all": {}}})
    assert [hit["_source"]["message"] for hit in hits["hits"]["hits"]] == ["record 0"]


def test_auditor_reads_and_cannot_write(elasticsearch_secure: SecureEs, stream: str) -> None:
    es = elasticsearch_secure
    assert _status(es, "auditor", "POST", f"/{stream}/_search", {"query": {"match_all": {}}}) == 200
    assert _status(es, "auditor", "GET", f"/{stream}/_mapping") == 200
    index = _backing_index(es, stream)
    for method, path, body in [("PUT", f"/{stream}/_create/host-a:5", _record(5)),
                               ("POST", f"/{index}/_update/host-a:0", {"doc": {"message": "x"}}),
                               ("DELETE", f"/{index}/_doc/host-a:0", None)]:
        assert _status(es, "auditor", method, path, body) == 403, (method, path)


def test_wrong_password_is_refused(elasticsearch_secure: SecureEs, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    client = connect(elasticsearch_secure.url, ca_file=elasticsearch_secure.ca_file, username="shipper",
                     password_file=wrong)
    with pytest.raises(EsError) as caught:
        request(client, "GET", "/")
    assert caught.value.reason == "http_401"


def test_wrong_ca_is_a_tls_error_not_retried(elasticsearch_secure: SecureEs, tmp_path: Path) -> None:
    from tests.fixtures.elasticsearch import _certificates  # another CA, valid but not the cluster's
    other_ca, _, _ = _certificates(tmp_path)
    with pytest.raises(EsError) as caught:
        request(_client(elasticsearch_secure, "auditor", ca_file=other_ca), "GET", "/")
    assert caught.value.reason == "tls" and not caught.value.retryable
