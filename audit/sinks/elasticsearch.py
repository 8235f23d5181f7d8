"""The Elasticsearch sink and reader: a ``logs-tee.audit-<namespace>`` data stream, exactly-once by ``_id``.

- Exactly once: every record is a bulk ``create`` with ``_id = <chain>:<seq>`` (checkpoints:
  ``<chain>:checkpoint:<size>``). ``_id`` is only unique per backing index, so the first batch after a start (a
  possible replay) and every batch after a failure (a possible retry) is first looked up across the whole data
  stream (one search), and what it already holds is left out: a rollover between two attempts cannot duplicate.
  The normal path (no replay, no retry) sends the bulk alone.
- "Already there" is never trusted: a 409 is read back (real-time ``_mget`` on the backing index that answered),
  and a stored document that is not our record or checkpoint, by content, raises ``SinkConflict`` (pre-emption by
  someone with write access): the sink stops instead of skipping a slot.
- Every bulk item is inspected (HTTP 200 can hide per-item failures): 201 is success, 409 see above; a 201 that
  went to the failure store, and 400s, stop this sink loudly (a chain with a hole is worse than a stalled chain);
  429, 5xx and connection errors are retried by the caller with capped backoff.
- Versions: requests go through ``perform_request`` with explicit ``compatible-with=8`` media types, which 8.x
  servers accept natively and 9.x servers through REST API compatibility, so one client (elasticsearch-py 8.13+
  or 9.x) talks to both.
- The index template sets ``index.mode: standard``: 9.x turns ``logs-*-*`` streams into LogsDB with synthetic
  ``_source`` by default, which may rewrite a stored document and so break its hash. Unknown fields are kept in
  ``_source`` but not indexed (``dynamic: false``), so no event can ever hit a mapping conflict.
- Checkpoints go to their own data stream without retention (``checkpoint_stream_name``): they must outlive the
  records they cover. So do the records' Merkle tiles (audit/estiles.py: written after the records of a batch that
  carries a checkpoint, caught up from the stored records on start) and the witnesses' cosignatures
  (``EsWitnessing``), both create-only documents there. Reading for ``verify`` is audit/readers/elasticsearch.py.
- The sink writes no template: ``tee-audit setup`` (audit/setup.py) installs them with an administrator's
  credential, and ``prepare`` checks, read-only, that it did before the first write. A failure whose cause is the
  configuration (TLS, credentials) carries a ``hint`` saying what to fix; no secret is ever part of an error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from elastic_transport import ApiError as TransportApiError
from elastic_transport import TlsError, TransportError
from elasticsearch import ApiError, Elasticsearch
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatch

from audit import checkpoint as ckpt
from audit import esmapping
from audit.canonical import CanonicalError, canonicalize
from audit.chain import doc_id, record_hash
from audit.estiles import EsTileReader, TileDoc, edge_size, tile_id, tile_of, writer_at
from audit.merkle import HASH_SIZE, leaf_hash
from audit.sinks import SinkConflict
from audit.tiles import WIDTH, TileError, TileWriter
from audit.witness import Witnesses

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
        self.hint = HINTS.get(reason, "")


# What an operator does about a failure that retrying cannot fix (logged with it).
HINTS = {
    "http_401": "Elasticsearch refused the credentials: check es.username and es.password-file (or es.api-key-file)",
    "http_403": "the credential lacks a privilege (the roles are in docs/elasticsearch/roles.yml)",
    "tls_untrusted": "the server certificate is not signed by a CA in es.ca-file",
    "tls_expired": "the server certificate is expired or not yet valid: renew it on the Elasticsearch side",
    "tls_hostname": "the server certificate is not issued for the host in --es",
    "tls": "the TLS handshake with Elasticsearch failed",
}


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
                "checkpoint": {"properties": {"size": {"type": "long"}, "root": keyword, "head": keyword,
                                              "note": {"type": "keyword", "index": False, "doc_values": False}}},
                # the Merkle tree's C2SP tiles (audit/estiles.py): found by level and index, bytes only in _source
                "tile": {"properties": {"level": {"type": "long"}, "index": {"type": "long"},
                                        "width": {"type": "long"}, "hashes": {"type": "binary"}}},
                # witnesses' cosignature lines of the tree checkpoint of ``size`` (C2SP tlog-cosignature)
                "cosignature": {"properties": {"size": {"type": "long"}, "witness": keyword,
                                               "lines": {"type": "keyword", "index": False, "doc_values": False}}},
            }},
        },
    }


def read_secret(path: Path) -> str:
    return Path(path).read_text().strip()


def _request_log_is_debug(record: logging.LogRecord) -> bool:
    """elastic_transport logs every request at INFO; one line per bulk is noise at our default level. Demote
    those lines to DEBUG (shown with ``--log.level debug``); its warnings and errors pass unchanged."""
    if record.levelno == logging.INFO:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


def _client_warning_is_debug(record: logging.LogRecord) -> bool:
    """The client's node pool warns on every failed request ("has failed for N times in a row"); the sink logs
    each failure itself, once, with its reason and what to do, so these repeats go to DEBUG too (errors pass)."""
    if record.levelno < logging.ERROR:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


logging.getLogger("elastic_transport.transport").addFilter(_request_log_is_debug)
logging.getLogger("elastic_transport.node_pool").addFilter(_client_warning_is_debug)
# urllib3 warns with the whole peer certificate before raising a host name mismatch, which the sink logs itself
logging.getLogger("urllib3.connection").addFilter(_client_warning_is_debug)


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
        reason, detail = _tls_failure(exc)
        raise EsError(reason, f"{method} {path}: {detail}", False) from None
    except (TransportError, TransportApiError) as exc:
        raise EsError("connection", f"{method} {path}: {type(exc).__name__}: {exc}", True) from None


# OpenSSL X509_V_ERR_* codes (openssl/x509_vfy.h) -> a bounded metric label saying what to fix.
_TLS_REASONS = {9: "tls_expired", 10: "tls_expired", 62: "tls_hostname", 64: "tls_hostname"}


def _tls_failure(exc: BaseException) -> tuple[str, str]:
    """``(reason, detail)`` of a failed handshake, from what the transport wrapped: ``tls_expired`` (certificate
    outside its validity), ``tls_hostname`` (not issued for the host asked; urllib3 checks names itself),
    ``tls_untrusted`` (any other verification failure: not signed by the configured CA), else ``tls``."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _TLS_REASONS.get(cause.verify_code, "tls_untrusted"), str(cause.verify_message)
        if isinstance(cause, HostnameMismatch):
            return "tls_hostname", str(cause).split(". Certificate:")[0]
        cause = cause.__cause__ or cause.__context__
    return "tls", str(exc)


def _brief(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return f"{err.get('type')}: {str(err.get('reason'))[:300]}"
    return str(body)[:300]


def template(namespace: str, retention: str) -> dict[str, Any]:
    return {
        "index_patterns": [data_stream_name(namespace)],
        "data_stream": {},
        "priority": 500,  # above the stack's built-in logs-*-* template (priority 100)
        "_meta": {"managed_by": "tee-audit", "description": "tee-audit hash-chained audit records"},
        "template": {
            "settings": {"index.mode": "standard", "index.auto_expand_replicas": "0-1",
                         "index.mapping.ignore_malformed": True},
            "lifecycle": {"data_retention": retention},
            # what an event must be to be indexed under it is decided before chaining (audit/esmapping.py)
            "mappings": {"dynamic": False, "properties": esmapping.PROPERTIES},
        },
    }


class ElasticsearchSink:
    """Bulk-creates sealed records and checkpoint documents in the data stream."""

    name = "elasticsearch"

    def __init__(self, client: Elasticsearch, chain_id: str, namespace: str = "default",
                 witnesses: tuple[str, ...] = ()) -> None:
        self.client, self.chain_id, self.namespace = client, chain_id, namespace
        self.stream = data_stream_name(namespace)
        self.checkpoint_stream = checkpoint_stream_name(self.stream)
        # both streams, for the searches that look for what is already stored (either may not exist yet)
        self._both = f"{self.stream},{self.checkpoint_stream}"
        self._ready = False
        # The highest seq / checkpoint size that may already be stored (None: not known yet). Batches at or below
        # it may be a replay (a crash between a bulk and the cursor write) or a retry (a failed or timed-out bulk
        # that got partly through), so they may already sit in an older backing index after a rollover. Above it
        # nothing of ours can be stored: the normal path sends the bulk alone.
        self._ceiling: tuple[int, int] | None = None
        # The records' Merkle tree (audit/estiles.py): opened from the stored tiles on the first write; the tiles
        # it changed wait in ``_unsent`` (by level and index, newest width) until a batch carries a checkpoint.
        self.tree: TileWriter | None = None
        self._unsent: dict[tuple[int, int], bytes] = {}
        self._flushed = 0  # the tree size whose tiles are stored: a partial tile grows from its width there
        self._edge: dict[int, TileDoc] = {}  # level -> the rightmost stored tile, from the ceiling query
        self._tiles_off = ""  # why this chain gets no tiles (its first records are gone), logged once
        self.witnessing = EsWitnessing(self, witnesses)
        self.tree_sizes: tuple[int, dict[str, int]] | None = None  # signed, {witness: cosigned}: metrics

    def prepare(self) -> None:
        """Check, read-only and once, that an administrator's ``tee-audit setup`` is in place (templates of this
        version, our privileges): ``audit.sinks.NotSetUp`` when it definitely is not, ``EsError`` when Elasticsearch
        gave no answer (checked again on the next call). The shipper never writes a template."""
        if not self._ready:
            from audit.setup import check  # audit.setup builds on this module's templates

            check(self.client, self.namespace)
            self._ready = True

    def write(self, records: list[tuple[int, bytes]], checkpoints: list[dict[str, Any]]) -> None:
        """Durable in Elasticsearch when this returns; raises ``EsError`` or ``SinkConflict`` otherwise."""
        self.prepare()
        try:
            todo, signed = records, checkpoints
            if self._may_be_stored(records, checkpoints):
                todo, signed = self._not_yet_stored(records, checkpoints)
            self._bulk(todo, signed)
            self._grow_tree(records, bool(checkpoints))
        except Exception:
            if self._ceiling is not None:  # else still unknown: asked again on the retry
                seqs, sizes = self._ceiling
                self._ceiling = (max([seqs, *(seq for seq, _ in records)]),
                                 max([sizes, *(cp["size"] for cp in checkpoints)]))
            raise
        self._witness([cp["note"] for cp in checkpoints])

    def _witness(self, notes: list[str]) -> None:
        """Offer the newest tree checkpoint to the witnesses once its records and tiles are stored, with a
        consistency proof from the tiles. A witness that fails does not hold up the records: the next one retries."""
        trees = [note for note in (_tree_note(text) for text in notes) if note is not None]
        if not trees or self.tree is None:
            return
        size, text = trees[-1]
        witnessed = self.witnessing.state()
        if self.witnessing.urls:
            try:
                refresh(self.client, self.checkpoint_stream)  # the tiles just written, for the proof's searches
                witnessed = self.witnessing.submit(text, EsTileReader(self._fetch, self.checkpoint_stream,
                                                                      self.chain_id, ahead=16).subtree)
            except EsError as exc:  # reading the proof or keeping a cosignature: the next checkpoint tries again
                log.warning("witnessing failed", extra={"sink": self.name, "size": size, "error": str(exc)})
        self.tree_sizes = (size, {url: witnessed.get(url, 0) for url in self.witnessing.urls})

    def _bulk(self, records: list[tuple[int, bytes]], checkpoints: list[dict[str, Any]]) -> None:
        items = [Item(doc_id(self.chain_id, seq), self.stream, doc) for seq, doc in records]
        items += [Item(checkpoint_id(self.chain_id, cp["size"]), self.checkpoint_stream, self._checkpoint_doc(cp))
                  for cp in checkpoints]
        present = self._send(items)
        if present:
            self._confirm_present(present, records, checkpoints)

    def _send(self, items: list[Item]) -> list[tuple[str, str]]:
        """Bulk-create ``items`` in order; ``(backing index, _id)`` of those already there (409)."""
        present: list[tuple[str, str]] = []
        for chunk in _chunks(items):
            lines: list[bytes] = []
            for item in chunk:
                lines.append(b'{"create":{"_index":%s,"_id":%s}}' % (json.dumps(item.stream).encode(),
                                                                    json.dumps(item.ident).encode()))
                lines.append(item.doc)
            body = b"\n".join(lines) + b"\n"
            result = request(self.client, "POST", f"/{self.stream}/_bulk?refresh=false", body, ndjson=True)
            # every item, even without "errors": a document redirected to the failure store answers 201
            present += _check_items(result["items"], chunk)
        return present

    def _checkpoint_doc(self, cp: dict[str, Any], legacy: bool = False) -> bytes:
        """A tree checkpoint's ``root`` is its Merkle root (hex) and ``head`` the chain head; a head checkpoint's
        ``root`` is the chain head, as before. ``legacy``: the shape versions before tiles wrote for a tree
        checkpoint (root = chain head), accepted when read back so an upgrade mid-replay is no conflict."""
        body: dict[str, Any] = {"size": cp["size"], "root": cp["hash"]}
        try:
            note = ckpt.parse(cp["note"])
        except ckpt.CheckpointError:
            note = None
        if note is not None and note.head is not None and not legacy:
            body = {"size": cp["size"], "root": note.root_hex, "head": cp["hash"]}
        return json.dumps({"@timestamp": utc(cp["t"]), "chain": {"id": self.chain_id},
                           "checkpoint": {**body, "note": cp["note"]}}).encode()

    # -- the Merkle tree's tiles (audit/estiles.py) ---------------------------------------------------------------
    def _fetch(self, method: str, path: str, body: Any) -> Any:
        return request(self.client, method, path, body)

    def _grow_tree(self, records: list[tuple[int, bytes]], flush: bool) -> None:
        """Append the batch's records (stored by now) to the tree; when the batch carries a checkpoint (or tiles
        of a failed attempt wait), write the tiles changed since the last time, after the records."""
        if self._tiles_off:
            return
        fresh = [(seq, doc) for seq, doc in records if self.tree is None or seq >= self.tree.size]
        if self.tree is None or (fresh and fresh[0][0] != self.tree.size):
            self.tree = self._open_tree(fresh[0][0] if fresh else None, records[-1][0] if records else -1)
            if self.tree is None:
                return
            fresh = [(seq, doc) for seq, doc in fresh if seq >= self.tree.size]
        self.tree.append(leaf_hash(doc) for _, doc in fresh)
        if flush or self._unsent:
            for level, index, data in self.tree.changes():
                self._unsent[(level, index)] = data
            self._send_tiles(self.tree.size)

    def _open_tree(self, first: int | None, last: int) -> TileWriter | None:
        """The tree at the size its stored tiles describe, brought up to ``first`` from the stored records (a crash
        after records whose tiles were not written yet; a chain shipped before tiles existed)."""
        reader = EsTileReader(self._fetch, self.checkpoint_stream, self.chain_id)
        try:
            if self.tree is None and self._ceiling is not None:  # the first time: the ceiling query read the edge
                for doc in self._edge.values():
                    reader.seed(doc)
                # tiles are written after their records: none of ours is past what was stored before this batch
                size, stored = edge_size(self._edge.get(0)), self._ceiling[0] + 1
            else:  # again (this batch starts past the tree): none of ours is past where this batch starts
                refresh(self.client, self.checkpoint_stream)
                size, stored = reader.size(), last if first is None else first
            if size > stored:  # planted: no tile of ours can be ahead of the records it is written after
                raise SinkConflict(self.name, [tile_id(self.chain_id, 0, (size - 1) // 256, (size - 1) % 256 + 1)],
                                   f"the tiles describe {size} records, the data stream holds {stored}")
            tree = writer_at(reader, size)
            self._flushed = size
            if first is not None and first > size:
                refresh(self.client, self.stream)
                tree.append(self._stored_leaves(size, first))
        except (TileError, _Gap) as exc:
            self._tiles_off = str(exc)
            log.error("no Merkle tiles for this chain: proofs from Elasticsearch cannot be made", extra={
                "sink": self.name, "chain": self.chain_id, "error": str(exc)})
            return None
        return tree

    def _stored_leaves(self, start: int, end: int) -> Iterator[bytes]:
        """The leaf hashes of stored records ``start..end-1`` (their RFC 8785 bytes, as stored and hashed)."""
        after, progressed = start - 1, True
        while after + 1 < end and progressed:
            query = {"bool": {"filter": [{"term": {"chain.id": self.chain_id}},
                                         {"range": {"chain.seq": {"gt": after, "lt": end}}}]}}
            hits = request(self.client, "POST", f"/{self.stream}/_search", {
                "size": _PAGE, "query": query, "sort": [{"chain.seq": "asc"}], "track_total_hits": False})
            all_shards(hits)
            progressed = False
            for hit in hits["hits"]["hits"]:
                if hit["_source"]["chain"]["seq"] != after + 1:
                    break  # a gap (or a second copy): the tree stops here, verify reports the records
                yield leaf_hash(canonicalize(hit["_source"]))
                after, progressed = after + 1, True
        if after + 1 != end:
            raise _Gap(f"record {after + 1} is not in the data stream (deleted by retention?): the tree of records "
                       f"{start}..{end - 1} cannot be rebuilt")

    def _send_tiles(self, size: int) -> None:
        """The tiles of the tree of ``size``, in one bulk, highest level first and level 0 last: a level-0 tile
        stored means the levels above it are."""
        order = sorted(((key, data) for key, data in self._unsent.items() if not self._stored_edge(*key, data)),
                       key=lambda item: (-item[0][0], item[0][1]))
        tiles = {tile_id(self.chain_id, level, index, len(data) // HASH_SIZE):
                 (self._tile_doc(level, index, data), data) for (level, index), data in order}
        stamp = utc(time.time())
        items = [Item(ident, self.checkpoint_stream, json.dumps({"@timestamp": stamp, **doc.source(self.chain_id)})
                      .encode()) for ident, (doc, _) in tiles.items()]
        present = self._send(items)
        if present:
            self._confirm_tiles(present, {ident: data for ident, (_, data) in tiles.items()})
        self._unsent.clear()
        self._flushed = size

    def _stored_edge(self, level: int, index: int, data: bytes) -> bool:
        """``data`` is the partial tile of the stored tree itself (a batch of no new record, a replay, still marks
        level 0 changed). Sent again it would go whole beside the stored one, grown from a narrower width: after a
        rollover of the checkpoint stream no 409 stops it, and the ``_id`` holds two different documents."""
        stored = self._flushed >> (8 * level)
        return stored // WIDTH == index and stored % WIDTH == len(data) // HASH_SIZE

    def _tile_doc(self, level: int, index: int, data: bytes) -> TileDoc:
        """A partial tile grows from the width it had at the stored tree size (audit/estiles.py): only the new
        hashes are sent."""
        stored = self._flushed >> (8 * level)  # the hashes of this level in the stored tree
        width = len(data) // HASH_SIZE
        grows = width < WIDTH and stored // WIDTH == index and 0 < stored % WIDTH < width
        return TileDoc.of(level, index, data, stored % WIDTH if grows else 0)

    def _confirm_tiles(self, present: list[tuple[str, str]], ours: dict[str, bytes]) -> None:
        """Tiles answered 409: the stored document must hold the very tile we computed (grown from another width
        when a crash cut a bulk short, the same hashes)."""
        reader = EsTileReader(self._fetch, self.checkpoint_stream, self.chain_id)
        bad: list[str] = []
        for index, ident in present:
            doc = request(self.client, "POST", f"/{index}/_mget", {"ids": [ident]})["docs"][0]
            if not doc.get("found"):
                raise EsError("conflict_unreadable", f"{index}/{ident}: 409 on create, but not found", True)
            stored = tile_of(doc["_source"], self.chain_id, ident)
            try:
                if stored is None or reader.whole(stored) != ours[ident]:
                    bad.append(ident)
            except TileError:
                bad.append(ident)
        if bad:
            raise SinkConflict(self.name, bad, "a tile with this _id exists and is not the tile of our records")

    # -- "already there" is checked, never trusted ----------------------------------------------------------------
    def _expected(self, records: list[tuple[int, bytes]], checkpoints: list[dict[str, Any]]) -> dict[str, Slot]:
        slots = {doc_id(self.chain_id, seq): Slot("r", seq, record_digest(doc)) for seq, doc in records}
        slots.update({checkpoint_id(self.chain_id, cp["size"]): Slot("c", cp["size"], cp["hash"],
                                                                     (self._checkpoint_doc(cp),
                                                                      self._checkpoint_doc(cp, legacy=True)))
                      for cp in checkpoints})
        return slots

    def _confirm_present(self, present: list[tuple[str, str]], records: list[tuple[int, bytes]],
                         checkpoints: list[dict[str, Any]]) -> None:
        """Bulk answered 409 for these ``(backing index, _id)``: read them back (real-time get, so an unrefreshed
        earlier attempt counts) and accept only what is byte-for-byte ours in content."""
        expected = self._expected(records, checkpoints)
        by_index: dict[str, list[str]] = {}
        for index, ident in present:
            by_index.setdefault(index, []).append(ident)
        bad: list[str] = []
        for index, ids in by_index.items():
            docs = request(self.client, "POST", f"/{index}/_mget", {"ids": ids})["docs"]
            for doc in docs:
                if not doc.get("found"):
                    raise EsError("conflict_unreadable", f"{index}/{doc.get('_id')}: 409 on create, but not found "
                                  "when read back", True)
                if not expected[doc["_id"]].holds(doc["_source"], self.chain_id):
                    bad.append(doc["_id"])
        if bad:
            raise SinkConflict(self.name, bad, "a document with this _id exists and is not the record we sealed")

    def _may_be_stored(self, records: list[tuple[int, bytes]], checkpoints: list[dict[str, Any]]) -> bool:
        if self._ceiling is None:
            self._ceiling = self._stored_ceiling()
        seqs, sizes = self._ceiling
        return (bool(records) and records[0][0] <= seqs) or any(cp["size"] <= sizes for cp in checkpoints)

    def _stored_ceiling(self) -> tuple[int, int]:
        """The highest ``chain.seq`` and checkpoint size of this chain in the data stream (all backing indices)."""
        # the rightmost tile of each level comes along: the tree's size and right edge without another request
        edge = {"top_hits": {"size": 1, "_source": ["chain", "tile"],
                             "sort": [{"tile.index": {"order": "desc", "unmapped_type": "long"}},
                                      {"tile.width": {"order": "desc", "unmapped_type": "long"}}]}}
        body = {"size": 0, "track_total_hits": False, "query": {"term": {"chain.id": self.chain_id}},
                "aggs": {"seq": {"max": {"field": "chain.seq"}}, "size": {"max": {"field": "checkpoint.size"}},
                         "tiles": {"terms": {"field": "tile.level", "size": 64}, "aggs": {"top": edge}},
                         "cosigned": {"terms": {"field": "cosignature.witness", "size": 1000},
                                      "aggs": {"size": {"max": {"field": "cosignature.size"}}}}}}
        try:
            refresh(self.client, self._both)
            answer = request(self.client, "POST", f"/{self._both}/_search?ignore_unavailable=true", body)
            aggs = answer.get("aggregations")
            all_shards(answer)
        except EsError as exc:
            if exc.reason != "http_404":
                raise
            return -1, -1  # no data stream yet
        if aggs is None:  # neither stream exists yet: there are no indices to aggregate over
            return -1, -1
        for bucket in aggs["tiles"]["buckets"]:
            hit = bucket["top"]["hits"]["hits"][0]
            found = tile_of(hit["_source"], self.chain_id, hit["_id"])
            if found is not None:
                self._edge[found.level] = found
        self.witnessing.known = {b["key"]: int(b["size"]["value"]) for b in aggs["cosigned"]["buckets"]}
        return (int(aggs["seq"]["value"]) if aggs["seq"]["value"] is not None else -1,
                int(aggs["size"]["value"]) if aggs["size"]["value"] is not None else -1)

    def _not_yet_stored(self, records: list[tuple[int, bytes]], checkpoints: list[dict[str, Any]]
                        ) -> tuple[list[tuple[int, bytes]], list[dict[str, Any]]]:
        """Drop what the data stream already holds, in any backing index (``_id`` is only unique per backing
        index, so after a rollover a replayed create would not meet a 409 but write a second copy). One search over
        the batch's ids, ``chain.seq`` range and checkpoint sizes; a holder with other content is a conflict."""
        if not records and not checkpoints:
            return records, checkpoints
        expected = self._expected(records, checkpoints)
        try:
            refresh(self.client, self._both)  # the search must see every acknowledged write
            found = self._holders(expected)
        except EsError as exc:
            if exc.reason != "http_404":
                raise
            return records, checkpoints  # no data stream yet: nothing is stored
        bad = sorted({ident for ident, ok in found if not ok})
        if bad:
            raise SinkConflict(self.name, bad, "the data stream already holds other content for these slots")
        stored = {ident for ident, _ in found}
        if stored:
            log.info("replay: skipping records the data stream already holds", extra={
                "sink": self.name, "stored": len(stored), "batch": len(expected)})
        return ([(seq, doc) for seq, doc in records if doc_id(self.chain_id, seq) not in stored],
                [cp for cp in checkpoints if checkpoint_id(self.chain_id, cp["size"]) not in stored])

    def _holders(self, expected: dict[str, Slot]) -> list[tuple[str, bool]]:
        """``(slot _id, holds our content)`` for every stored document claiming a slot of ``expected``."""
        seqs = [s.number for s in expected.values() if s.kind == "r"]
        sizes = [s.number for s in expected.values() if s.kind == "c"]
        mine = {"term": {"chain.id": self.chain_id}}
        should: list[dict[str, Any]] = [{"ids": {"values": list(expected)}}]
        if seqs:
            should.append({"bool": {"filter": [mine, {"range": {"chain.seq": {"gte": min(seqs),
                                                                                "lte": max(seqs)}}}]}})
        if sizes:
            should.append({"bool": {"filter": [mine, {"terms": {"checkpoint.size": sizes}}]}})
        size = min(_MAX_WINDOW, 2 * len(expected) + 100)
        body = {"size": size, "track_total_hits": True,
                "query": {"bool": {"should": should, "minimum_should_match": 1}}}
        answer = request(self.client, "POST", f"/{self._both}/_search?ignore_unavailable=true", body)
        all_shards(answer)  # a document on a failed shard unseen would be written a second time
        hits = answer["hits"]
        if hits["total"]["value"] > len(hits["hits"]):
            raise SinkConflict(self.name, list(expected)[:1], f"{hits['total']['value']} documents claim "
                               f"{len(expected)} slots")
        found: list[tuple[str, bool]] = []
        for hit in hits["hits"]:
            for ident in self._claims(hit, expected, set(seqs), set(sizes)):
                found.append((ident, expected[ident].holds(hit["_source"], self.chain_id)))
        return found

    def _claims(self, hit: dict[str, Any], expected: dict[str, Slot], seqs: set[int], sizes: set[int]) -> set[str]:
        """The slots a stored document occupies: by its ``_id``, and by the seq or size its content names."""
        claims = {hit["_id"]} if hit["_id"] in expected else set()
        src = hit["_source"]
        chain = src.get("chain") if isinstance(src, dict) else None
        if isinstance(chain, dict) and chain.get("id") == self.chain_id:
            if type(chain.get("seq")) is int and chain["seq"] in seqs:
                claims.add(doc_id(self.chain_id, chain["seq"]))
            cp = src.get("checkpoint")
            if isinstance(cp, dict) and type(cp.get("size")) is int and cp["size"] in sizes:
                claims.add(checkpoint_id(self.chain_id, cp["size"]))
        return claims

    def flush(self) -> None:
        """Make everything written visible to searches (``verify`` right after ``ship --once``)."""
        refresh(self.client, self._both)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Slot:
    """What we are about to store under one ``_id``: a record (``seq``, hash) or a checkpoint (size, root, and the
    document we write for it)."""

    kind: str
    number: int
    digest: str
    checkpoint_docs: tuple[bytes, ...] = ()  # ours, and the shape an older version wrote for it

    def holds(self, source: Any, chain_id: str) -> bool:
        """True when ``source`` (a stored document) is exactly our record or checkpoint, judged by content."""
        if not isinstance(source, dict):
            return False
        try:
            if self.kind == "c":  # the whole document: a field added next to a genuine note is not ours either
                return any(canonicalize(source) == canonicalize(json.loads(doc)) for doc in self.checkpoint_docs)
            chain = source.get("chain")
            if not isinstance(chain, dict) or chain.get("hash") != self.digest:
                return False
            # the stored hash field is only a claim: recompute it over the stored content
            return record_hash(source) == self.digest
        except (CanonicalError, TypeError, ValueError, KeyError):
            return False


def all_shards(answer: dict[str, Any]) -> None:
    """A search that failed on some shard answers 200 with what the others found: not an answer to rely on."""
    shards = answer.get("_shards") or {}
    if shards.get("failed"):
        reason = (shards.get("failures") or [{}])[0].get("reason")
        raise EsError("search_shards", f"a search failed on {shards['failed']} shard(s): {_brief({'error': reason})}",
                      True)


class EsWitnessing(Witnesses):
    """Cosignatures kept as create-only documents in the checkpoint stream, ``_id`` =
    ``<chain>:cosignature:<size>:<first 16 hex of SHA-256(lines)>`` (content-addressed: a replay meets a 409 over
    the same lines, read back and compared). The size each witness cosigned last comes from them, with the
    sink's start-up query (a forged larger one only makes the witness answer 409 with the size it knows)."""

    def __init__(self, sink: ElasticsearchSink, urls: tuple[str, ...]) -> None:
        self.sink, self.urls = sink, urls
        self.known: dict[str, int] = {}

    def state(self) -> dict[str, int]:
        return dict(self.known)

    def keep(self, url: str, size: int, lines: str, state: dict[str, int]) -> None:
        sink = self.sink
        ident = f"{sink.chain_id}:cosignature:{size}:{hashlib.sha256(lines.encode()).hexdigest()[:16]}"
        fields = {"chain": {"id": sink.chain_id}, "cosignature": {"size": size, "witness": url, "lines": lines}}
        doc = json.dumps({"@timestamp": utc(time.time()), **fields}).encode()
        for index, _ in sink._send([Item(ident, sink.checkpoint_stream, doc)]):
            stored = request(sink.client, "POST", f"/{index}/_mget", {"ids": [ident]})["docs"][0]
            source = stored.get("_source") or {}
            if {k: source.get(k) for k in fields} != fields:
                raise SinkConflict(sink.name, [ident], "a cosignature document with this _id exists and is not "
                                   "the witness's answer")
        self.known = dict(state)


def _tree_note(text: str) -> tuple[int, str] | None:
    """``(size, text)`` of a tree checkpoint (it carries the chain head line), None for anything else."""
    try:
        note = ckpt.parse(text)
    except ckpt.CheckpointError:
        return None
    return (note.size, text) if note.head is not None else None


class _Gap(Exception):
    """Records the tree needs are not stored (the message says which)."""


def checkpoint_id(chain_id: str, size: int) -> str:
    return f"{chain_id}:checkpoint:{size}"


def record_digest(doc: bytes) -> str:
    """``chain.hash`` of a sealed record. Parsed, not searched for: an event may nest its own ``chain.hash``
    (``agent.chain.hash`` sorts before the top-level ``chain``), which would then be taken for the record's. Only
    replays, retries and 409s come here, never the normal path."""
    return str(orjson.loads(doc)["chain"]["hash"])


_MAX_WINDOW = 10_000  # index.max_result_window
# Bytes of documents per bulk request. Elasticsearch refuses a request over http.max_content_length (100 MB by
# default) with 413, for good: journal lines of up to 1 MiB times es.batch-size would otherwise stall the sink.
BULK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Item:
    """One document of a bulk request: its ``_id``, the data stream it goes to, its bytes."""

    ident: str
    stream: str
    doc: bytes


def _chunks(items: list[Item]) -> Iterator[list[Item]]:
    """``items`` cut into runs of at most ``BULK_BYTES`` of documents (a larger document goes alone)."""
    chunk: list[Item] = []
    size = 0
    for item in items:
        if chunk and size + len(item.doc) > BULK_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item.doc)
    if chunk:
        yield chunk


def _check_items(items: list[dict[str, Any]], sent: list[Item]) -> list[tuple[str, str]]:
    """Raise for failed items; return ``(backing index, _id)`` of every 409 (the caller reads those back).

    Success is only "created, under our ``_id``, in a backing index of our data stream": an ingest pipeline set on
    the stream by someone with cluster rights can drop a document (200 ``noop``), give it another ``_id`` or
    reroute it to another index, and each of those answers looks like success."""
    if len(items) != len(sent):
        raise EsError("bulk_answer", f"{len(items)} answers for {len(sent)} documents", False)
    retry: EsError | None = None
    present: list[tuple[str, str]] = []
    for item, doc in zip(items, sent, strict=True):
        ident, stream = doc.ident, doc.stream
        res = item.get("create") or next(iter(item.values()))
        status = res.get("status", 0)
        if res.get("failure_store") == "used":
            # Elasticsearch took the document into the failure store (a .fs- index): not a record of the chain.
            raise EsError("failure_store", f"_id {res.get('_id')}: redirected to the failure store "
                          f"{res.get('_index')}; fix the cause, then it is written again", False)
        if status == 409:
            if res.get("_id") != ident or not str(res.get("_index", "")).startswith(f".ds-{stream}-"):
                raise EsError("not_stored", f"_id {ident}: 409 for _id {res.get('_id')!r} in "
                              f"{res.get('_index')!r}, not in a backing index of {stream}", False)
            present.append((res["_index"], ident))
            continue
        if status in (200, 201):
            if not _created_as_sent(res, ident, stream):
                raise EsError("not_stored", f"_id {ident}: answered {status} {res.get('result')!r} as _id "
                              f"{res.get('_id')!r} in {res.get('_index')!r}: not created as sent (an ingest "
                              "pipeline dropping, renaming or rerouting documents?)", False)
            continue
        detail = f"_id {res.get('_id')}: HTTP {status}: {_brief({'error': res.get('error')})}"
        if status == 429 or status >= 500:
            retry = retry or EsError("rejected" if status == 429 else "server", detail, True)
        else:
            raise EsError("mapping" if status == 400 else f"http_{status}", detail, False)
    if retry is not None:
        raise retry
    return present


def _created_as_sent(res: dict[str, Any], ident: str, stream: str) -> bool:
    index = str(res.get("_index", ""))
    return (res.get("status") == 201 and res.get("result") == "created" and res.get("_id") == ident
            and index.startswith(f".ds-{stream}-"))


def refresh(client: Elasticsearch, stream: str) -> None:
    """Refresh ``stream`` (a comma-separated list may name streams that do not exist yet)."""
    request(client, "POST", f"/{stream}/_refresh?ignore_unavailable=true")
