"""The Elasticsearch sink and reader: a ``logs-tee.audit-<namespace>`` data stream, exactly-once by ``_id``.

- Exactly once: every record is a bulk ``create`` with ``_id = <chain>:<seq>`` (checkpoints:
  ``<chain>:checkpoint:<size>``), so a replay after a crash or a retry after a timeout can only meet a 409
  (already there), never write a second copy.
- Every bulk item is inspected (HTTP 200 can hide per-item failures): 201/409 are success; 429, 5xx and
  connection errors are retried by the caller with capped backoff; anything else (a mapping error, 400) stops
  this sink loudly: a chain with a hole is worse than a stalled chain.
- Versions: requests go through ``perform_request`` with explicit ``compatible-with=8`` media types, which 8.x
  servers accept natively and 9.x servers through REST API compatibility, so one client (elasticsearch-py 8.13+
  or 9.x) talks to both.
- The index template sets ``index.mode: standard``: 9.x turns ``logs-*-*`` streams into LogsDB with synthetic
  ``_source`` by default, which may rewrite a stored document and so break its hash. Unknown fields are kept in
  ``_source`` but not indexed (``dynamic: false``), so no event can ever hit a mapping conflict.
- Checkpoints go to their own data stream without retention (``checkpoint_stream_name``): they must outlive the
  records they cover. Reading for ``verify`` is audit/readers/elasticsearch.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from elastic_transport import ApiError as TransportApiError
from elastic_transport import TlsError, TransportError
from elasticsearch import ApiError, Elasticsearch

from audit.chain import doc_id

log = logging.getLogger(__name__)

DATASET = "tee.audit"
_JSON = "application/vnd.elasticsearch+json; compatible-with=8"
_NDJSON = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
_PAGE = 5000


class EsError(Exception):
    """A request failed; ``reason`` is a bounded label, ``retryable`` says whether a later retry can succeed."""

    def __init__(self, reason: str, detail: str, retryable: bool) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.retryable = reason, retryable


def utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def data_stream_name(namespace: str) -> str:
    return f"logs-{DATASET}-{namespace}"


def checkpoint_stream_name(records_stream: str) -> str:
    """Where the checkpoints of ``records_stream`` go: their own data stream, without retention, so they outlive
    the records they cover (``verify`` starts from them once retention deleted old backing indices)."""
    return records_stream.replace(f"-{DATASET}-", f"-{DATASET}.checkpoints-", 1)


def checkpoint_template(namespace: str) -> dict[str, Any]:
    keyword = {"type": "keyword"}
    return {
        "index_patterns": [checkpoint_stream_name(data_stream_name(namespace))],
        "data_stream": {},
        "priority": 500,
        "_meta": {"managed_by": "tee-audit", "description": "tee-audit signed checkpoints (kept: no retention)"},
        "template": {
            "settings": {"index.mode": "standard", "index.auto_expand_replicas": "0-1"},
            "lifecycle": {"enabled": False},
            "mappings": {"dynamic": False, "properties": {
                "@timestamp": {"type": "date_nanos"},
                "chain": {"properties": {"id": keyword}},
                "checkpoint": {"properties": {"size": {"type": "long"}, "root": keyword,
                                              "note": {"type": "keyword", "index": False, "doc_values": False}}},
            }},
        },
    }


def read_secret(path: Path) -> str:
    return Path(path).read_text().strip()


def connect(url: str, ca_file: Path | None = None, api_key_file: Path | None = None, username: str | None = None,
            password_file: Path | None = None, timeout: float = 30.0, **kwargs: Any) -> Elasticsearch:
    """A client; ``kwargs`` go to ``Elasticsearch`` (the verify reader passes its own ``serializers``)."""
    if ca_file:
        kwargs["ca_certs"] = str(ca_file)
    if api_key_file:
        kwargs["api_key"] = read_secret(api_key_file)
    if username:
        kwargs["basic_auth"] = (username, read_secret(password_file) if password_file else "")
    return Elasticsearch(url, request_timeout=timeout, max_retries=0, retry_on_timeout=False, **kwargs)


def request(client: Elasticsearch, method: str, path: str, body: Any = None,
            ndjson: bool = False) -> Any:
    """One request with version-neutral media types; errors become ``EsError`` with a bounded reason."""
    headers = {"accept": _JSON}
    if body is not None:
        headers["content-type"] = _NDJSON if ndjson else _JSON
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body).encode()
    try:
        return client.perform_request(method, path, headers=headers, body=body).body
    except ApiError as exc:
        status = exc.meta.status
        retryable = status == 429 or status >= 500
        reason = "rejected" if status == 429 else ("server" if status >= 500 else f"http_{status}")
        raise EsError(reason, f"{method} {path}: HTTP {status}: {_brief(exc.body)}", retryable) from None
    except TlsError as exc:  # a certificate problem does not go away by retrying
        raise EsError("tls", f"{method} {path}: {exc}", False) from None
    except (TransportError, TransportApiError) as exc:
        raise EsError("connection", f"{method} {path}: {type(exc).__name__}: {exc}", True) from None


def _brief(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return f"{err.get('type')}: {str(err.get('reason'))[:300]}"
    return str(body)[:300]


def template(namespace: str, retention: str) -> dict[str, Any]:
    keyword = {"type": "keyword"}
    return {
        "index_patterns": [data_stream_name(namespace)],
        "data_stream": {},
        "priority": 500,  # above the stack's built-in logs-*-* template (priority 100)
        "_meta": {"managed_by": "tee-audit", "description": "tee-audit hash-chained audit records"},
        "template": {
            "settings": {"index.mode": "standard", "index.auto_expand_replicas": "0-1",
                         "index.mapping.ignore_malformed": True},
            "lifecycle": {"data_retention": retention},
            "mappings": {
                "dynamic": False,
                "properties": {
                    "@timestamp": {"type": "date_nanos"},
                    "message": {"type": "text"},
                    "chain": {"properties": {"id": keyword, "seq": {"type": "long"}, "prev_hash": keyword,
                                             "hash": keyword}},
                    "checkpoint": {"properties": {"size": {"type": "long"}, "root": keyword,
                                                  "note": {"type": "keyword", "index": False, "doc_values": False}}},
                    "ecs": {"properties": {"version": keyword}},
                    "event": {"properties": {k: keyword for k in (
                        "id", "kind", "category", "type", "action", "outcome", "reason", "dataset", "module")}},
                    "host": {"properties": {"name": keyword}},
                    "rule": {"properties": {"name": keyword}},
                    "labels": {"type": "object", "dynamic": True},
                    "tee": {"properties": {
                        "type": keyword,
                        "vm": {"properties": {k: keyword for k in ("name", "uuid", "state", "sandbox_id")}},
                        "measurement": keyword,
                        "policy": {"properties": {"result": keyword, "violations": keyword}},
                        "kbs": {"properties": {k: keyword for k in (
                            "resource", "repository", "resource_type", "tag", "requester", "decision")}},
                    }},
                },
            },
        },
    }


class ElasticsearchSink:
    """Bulk-creates sealed records and checkpoint documents in the data stream."""

    name = "elasticsearch"

    def __init__(self, client: Elasticsearch, chain_id: str, namespace: str = "default",
                 retention: str = "90d") -> None:
        self.client, self.chain_id = client, chain_id
        self.namespace, self.retention = namespace, retention
        self.stream = data_stream_name(namespace)
        self._template_ready = False

    def ensure_template(self) -> None:
        if not self._template_ready:
            request(self.client, "PUT", f"/_index_template/{self.stream}", template(self.namespace, self.retention))
            request(self.client, "PUT", f"/_index_template/{checkpoint_stream_name(self.stream)}",
                    checkpoint_template(self.namespace))
            self._template_ready = True

    def write(self, records: list[tuple[int, bytes]], checkpoints: list[dict[str, Any]]) -> None:
        """Durable in Elasticsearch when this returns; raises ``EsError`` otherwise (see module doc)."""
        self.ensure_template()
        lines: list[bytes] = []
        for seq, doc in records:
            lines.append(b'{"create":{"_id":%s}}' % json.dumps(doc_id(self.chain_id, seq)).encode())
            lines.append(doc)
        for cp in checkpoints:
            lines.append(b'{"create":{"_index":%s,"_id":%s}}' % (
                json.dumps(checkpoint_stream_name(self.stream)).encode(),
                json.dumps(f"{self.chain_id}:checkpoint:{cp['size']}").encode()))
            lines.append(json.dumps({"@timestamp": utc(cp["t"]), "chain": {"id": self.chain_id},
                                     "checkpoint": {"size": cp["size"], "root": cp["hash"],
                                                    "note": cp["note"]}}).encode())
        if not lines:
            return
        body = b"\n".join(lines) + b"\n"
        result = request(self.client, "POST", f"/{self.stream}/_bulk?refresh=false", body, ndjson=True)
        if result.get("errors"):
            _check_items(result["items"])

    def flush(self) -> None:
        """Make everything written visible to searches (``verify`` right after ``ship --once``)."""
        refresh(self.client, self.stream)

    def close(self) -> None:
        self.client.close()


def _check_items(items: list[dict[str, Any]]) -> None:
    retry: EsError | None = None
    for item in items:
        res = item.get("create") or next(iter(item.values()))
        status = res.get("status", 0)
        if status in (200, 201, 409):
            continue  # 409 on create: the document is already there (an earlier attempt got through)
        detail = f"_id {res.get('_id')}: HTTP {status}: {_brief({'error': res.get('error')})}"
        if status == 429 or status >= 500:
            retry = retry or EsError("rejected" if status == 429 else "server", detail, True)
        else:
            raise EsError("mapping" if status == 400 else f"http_{status}", detail, False)
    if retry is not None:
        raise retry


def refresh(client: Elasticsearch, stream: str) -> None:
    request(client, "POST", f"/{stream}/_refresh")
