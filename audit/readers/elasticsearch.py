"""Reading chains from Elasticsearch for ``verify``: the stored bytes of every document, fast.

- Responses are taken as bytes (a serializer that does not parse) and parsed with orjson. Elasticsearch returns
  a document's ``_source`` exactly as it was stored, so the bytes after each hit's ``"_source":`` are the stored
  document: when they start with orjson's compact rendering of the parsed ``_source``, that rendering *is* the
  stored text (the first ``"_source":`` after the previous document cannot lie inside the response's own strings:
  a quote in a JSON string is escaped), and ``canonical_link`` checks it without canonicalising anything. Other
  bytes (whitespace, a respelled number, escapes) are cut out exactly with the standard decoder and judged by the
  full path, which reports them: the RFC 8785 bytes are the contract.
- A page no parser can read (a document nested deeper than orjson's 1024 levels, which the shipper, whose parser
  stops earlier, never writes) is read again without ``_source``; each of its documents is then fetched alone,
  and one that still cannot be read is a ``modified`` record at the seq its doc values give.
- Checkpoints are read from the checkpoint stream (``logs-tee.audit.checkpoints-<ns>``, no retention) and, for
  chains shipped before it existed, from the records stream.
- Retention: the data stream's backing indices are read from the cluster state (``_data_stream`` is not in every
  distribution). When the oldest backing index still present is not the stream's first generation, older ones
  were deleted, and the records before the chain's first record still present are reported as expired.
- The failure store (``<stream>::failures``) is read too: documents of this chain Elasticsearch refused.
- A search that failed on some shard answers 200 with what the other shards found. Judged, the records of the
  failed shard would be reported dropped; every search here refuses such an answer instead (``cannot verify``).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from elastic_transport import JsonSerializer
from elasticsearch import Elasticsearch

from audit.canonical import canonicalize
from audit.estiles import EsTileReader
from audit.sinks import elasticsearch as es
from audit.verify import Finding, Rec, VerifyError, parse_record

PAGE = 5000
TAIL = 10_000  # uncovered records whose timestamps the checkpoint promise is checked against
_COMPAT = "application/vnd.elasticsearch+json"


@dataclass(frozen=True)
class EsOptions:
    url: str | None
    data_stream: str | None = None
    ca_file: Path | None = None
    api_key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None


class _Bytes(JsonSerializer):
    """Leaves response bodies as bytes: the reader needs the stored text, and parses with orjson itself."""

    def loads(self, data: bytes) -> Any:
        return bytes(data)


def connect(conn: EsOptions) -> Elasticsearch:
    raw = _Bytes()
    try:
        return es.connect(conn.url or "", conn.ca_file, conn.api_key_file, conn.username, conn.password_file,
                          serializers={_COMPAT: raw, "application/json": raw})
    except (OSError, ValueError) as exc:
        raise VerifyError(f"cannot connect to Elasticsearch: {exc}") from None


def _decode(raw: bytes) -> Any:
    """orjson first; the standard decoder for what orjson refuses (lone surrogate escapes, integers beyond 64
    bits); None when neither can (nesting too deep)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def call(client: Elasticsearch, method: str, path: str, body: Any = None) -> Any:
    raw = es.request(client, method, path, body)
    value = _decode(raw)
    if value is None:
        raise VerifyError(f"{method} {path}: the response cannot be parsed")
    return value


def search(client: Elasticsearch, path: str, body: dict[str, Any]) -> Any:
    """A search answered by every shard (see the module doc)."""
    answer = call(client, "POST", path, body)
    es.all_shards(answer)
    return answer


def _source_slices(raw: bytes, hits: list[dict[str, Any]], cursor: int = 0) -> Iterator[bytes | None]:
    """The stored bytes of each hit's ``_source`` (see the module doc), from ``cursor`` on; None for a hit
    without one."""
    text: str | None = None
    for hit in hits:
        src = hit.get("_source")
        pos = raw.find(b'"_source":', cursor) + 10
        if src is None or pos < 10:
            yield None
            continue
        try:
            rendered = orjson.dumps(src)
        except orjson.JSONEncodeError:
            rendered = b""
        if rendered and raw.startswith(rendered, pos):
            cursor = pos + len(rendered)
            yield rendered
            continue
        if text is None:
            text = raw.decode("utf-8", "surrogateescape")
        start = len(raw[:pos].decode("utf-8", "surrogateescape"))
        try:
            _, end = json.JSONDecoder().raw_decode(text, start)
        except (ValueError, RecursionError):
            yield None
            continue
        stored = text[start:end].encode("utf-8", "surrogateescape")
        cursor = pos + len(stored)
        yield stored


def _hits(client: Elasticsearch, stream: str, query: dict[str, Any], sort: list[Any],
          size: int = PAGE) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """Every hit of a point-in-time + ``search_after`` scan with the stored bytes of its ``_source``. The next page
    is fetched by a thread while this one is verified: Elasticsearch's work overlaps ours."""
    pit = call(client, "POST", f"/{stream}/_pit?keep_alive=2m")["id"]
    pages: queue.Queue[tuple[bytes, Any] | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()
    fetcher = threading.Thread(target=_fetch_pages, args=(client, pit, query, sort, size, pages, stop),
                               name="verify-fetch", daemon=True)
    fetcher.start()
    try:
        while (item := pages.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            raw, page = item
            hits = page["hits"]["hits"]
            if page.get("_unreadable"):
                yield from ((hit, _fetch_one(client, hit)) for hit in hits)
            else:
                yield from zip(hits, _source_slices(raw, hits, max(0, raw.find(b'"hits":['))), strict=True)
    finally:
        stop.set()
        while fetcher.is_alive():
            try:
                pages.get(timeout=0.1)
            except queue.Empty:
                pass
        try:
            es.request(client, "DELETE", "/_pit", {"id": pit})
        except es.EsError:
            pass


def _fetch_pages(client: Elasticsearch, pit: str, query: dict[str, Any], sort: list[Any], size: int,
                 pages: queue.Queue[tuple[bytes, Any] | BaseException | None], stop: threading.Event) -> None:
    """The scan's pages, in order, into ``pages`` (then None); an error is handed over instead."""
    try:
        after = None
        while not stop.is_set():
            body: dict[str, Any] = {"size": size, "query": query, "sort": sort, "track_total_hits": False,
                                    "pit": {"id": pit, "keep_alive": "2m"}}
            if after is not None:
                body["search_after"] = after
            raw = es.request(client, "POST", "/_search", body)
            page = _decode(raw)
            if page is None:  # see the module doc: the same page without sources, then each document alone
                page = call(client, "POST", "/_search", {**body, "_source": False, "docvalue_fields": _DOC_VALUES})
                page["_unreadable"] = True
            es.all_shards(page)
            hits = page["hits"]["hits"]
            if not hits:
                break
            pages.put((raw, page))
            pit = page.get("pit_id", pit)
            after = hits[-1]["sort"]
        pages.put(None)
    except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
        pages.put(exc)


def _fetch_one(client: Elasticsearch, hit: dict[str, Any]) -> bytes | None:
    raw = es.request(client, "GET", f"/{hit['_index']}/_doc/{quote(hit['_id'], safe='')}")
    doc = _decode(raw)
    return None if doc is None else next(_source_slices(raw, [doc]))


def _chain_query(chain_id: str, fld: str) -> dict[str, Any]:
    return {"bool": {"filter": [{"term": {"chain.id": chain_id}}, {"exists": {"field": fld}}]}}


_DOC_VALUES = ["chain.seq", "chain.hash", "chain.prev_hash"]


def records(client: Elasticsearch, stream: str, chain_id: str,
            tap: Callable[[int, bytes], None] | None = None, sealed: int = 0) -> Iterator[Rec | Finding]:
    """Records sorted by seq; a document whose ``_id`` names another seq of this chain is flagged misplaced.
    ``tap`` is given each record's seq and stored bytes as it passes (the Merkle tree walk, audit/treeverify.py).
    ``sealed``: documents of a seq below it may be checked without parsing (``verify.parse_record``)."""
    chain_json = canonicalize(chain_id)
    prefix = f"{chain_id}:"
    expect: tuple[int, str] | None = None
    hits = _hits(client, stream, _chain_query(chain_id, "chain.seq"), [{"chain.seq": "asc"}])
    for arrival, (hit, stored) in enumerate(hits):
        item = _record(hit, stored, arrival, chain_json, expect, sealed)
        expect = (item.seq + 1, item.hash) if isinstance(item, Rec) and item.valid else None
        if isinstance(item, Rec):
            if tap is not None and stored is not None:
                tap(item.seq, stored)
            suffix = hit["_id"].removeprefix(prefix)
            if hit["_id"].startswith(prefix) and suffix.isdigit() and int(suffix) != item.seq:
                item.misplaced = True
        yield item


def _record(hit: dict[str, Any], stored: bytes | None, arrival: int, chain_json: bytes,
            expect: tuple[int, str] | None, sealed: int) -> Rec | Finding:
    if stored is not None:
        return parse_record(stored, arrival, chain_json, expect, sealed)
    fields = hit.get("fields", {})
    try:
        seq, digest, prev = (fields[f"chain.{k}"][0] for k in ("seq", "hash", "prev_hash"))
    except (KeyError, IndexError, TypeError):
        return Finding("inserted", None, f"document {hit.get('_id')!r} cannot be read")
    return Rec(int(seq), str(digest), str(prev), False, "", arrival,
               why="the stored document cannot be read (nested too deeply, or not JSON)")


def checkpoints(client: Elasticsearch, stream: str, chain_id: str) -> list[str]:
    """The notes of ``chain_id`` in the checkpoint stream and (older deployments) in the records stream."""
    notes: list[str] = []
    for name in (es.checkpoint_stream_name(stream), stream):
        try:
            for hit, _ in _hits(client, name, _chain_query(chain_id, "checkpoint.size"),
                                [{"checkpoint.size": "asc"}]):
                src = hit.get("_source")
                body = src.get("checkpoint") if isinstance(src, dict) else None
                note = body.get("note") if isinstance(body, dict) else None
                if isinstance(note, str):
                    notes.append(note)
        except es.EsError as exc:
            if "index_not_found" not in str(exc) and "HTTP 404" not in str(exc):
                raise
    return notes


def tiles(client: Elasticsearch, stream: str, chain_id: str, ahead: int = 1) -> EsTileReader:
    """The chain's Merkle tiles (audit/estiles.py), in the checkpoint stream of ``stream``."""
    return EsTileReader(lambda method, path, body: call(client, method, path, body),
                        es.checkpoint_stream_name(stream), chain_id, ahead)


def record_copies(client: Elasticsearch, stream: str, chain_id: str, seq: int) -> list[bytes]:
    """The stored bytes of every document of ``chain_id`` claiming ``seq`` (one, unless someone added another)."""
    query = {"bool": {"filter": [{"term": {"chain.id": chain_id}}, {"term": {"chain.seq": seq}}]}}
    raw = es.request(client, "POST", f"/{stream}/_search", {"size": 10, "query": query})
    page = _decode(raw)
    if page is None:
        raise VerifyError(f"record {seq}: the response cannot be parsed")
    es.all_shards(page)
    hits = page["hits"]["hits"]
    return [stored for stored in _source_slices(raw, hits, max(0, raw.find(b'"hits":['))) if stored is not None]


def cosignatures(client: Elasticsearch, stream: str, chain_id: str, size: int | None = None) -> dict[int, str]:
    """Witness cosignature lines stored by the sink (``EsWitnessing``), by checkpoint size (one witness name
    once per size); ``size``: of that checkpoint only. Judged by whoever reads them (``cosign.cosigned``)."""
    query: dict[str, Any] = _chain_query(chain_id, "cosignature.size")
    if size is not None:
        query["bool"]["filter"].append({"term": {"cosignature.size": size}})
    out: dict[int, str] = {}
    seen: set[tuple[int, str]] = set()
    try:
        for hit, _ in _hits(client, es.checkpoint_stream_name(stream), query, [{"cosignature.size": "asc"}]):
            body = (hit.get("_source") or {}).get("cosignature")
            if not isinstance(body, dict) or type(body.get("size")) is not int or not isinstance(body.get("lines"),
                                                                                                  str):
                continue
            for line in body["lines"].splitlines():
                name = line.split(" ")[1] if line.count(" ") >= 2 else ""
                if line.startswith("\u2014 ") and (body["size"], name) not in seen:
                    seen.add((body["size"], name))
                    out[body["size"]] = out.get(body["size"], "") + line + "\n"
    except es.EsError as exc:
        if not _missing_index(exc):
            raise
    return out


def _missing_index(exc: es.EsError) -> bool:
    return exc.reason == "http_404" or "index_not_found" in str(exc)


def retention_floor(client: Elasticsearch, stream: str, chain_id: str) -> tuple[int, str]:
    """``(first seq still present, why)`` when backing indices older than the oldest present one were deleted
    (retention), else ``(0, "")``. Read from the cluster state: not every distribution has ``_data_stream``."""
    try:
        state = call(client, "GET", f"/_cluster/state/metadata/{stream}?filter_path=metadata.data_stream")
    except es.EsError as exc:
        if exc.reason in ("http_401", "http_403"):
            return 0, ""  # an auditor without the monitor privilege: a deleted prefix is then reported missing
        raise
    streams = (state.get("metadata", {}).get("data_stream", {}).get("data_stream", {}))
    info = streams.get(stream) if isinstance(streams, dict) else None
    if not isinstance(info, dict) or not info.get("indices"):
        return 0, ""
    oldest = info["indices"][0].get("index_name", "")
    generation = oldest.rsplit("-", 1)[-1]
    if not generation.isdigit() or int(generation) <= 1:
        return 0, ""
    first = search(client, f"/{stream}/_search", {
        "size": 1, "query": _chain_query(chain_id, "chain.seq"), "sort": [{"chain.seq": "asc"}],
        "_source": False, "docvalue_fields": ["chain.seq"]})["hits"]["hits"]
    if not first:
        return 0, ""
    seq = int(first[0]["fields"]["chain.seq"][0])
    return seq, f"backing indices before {oldest} were deleted"


def tail(client: Elasticsearch, stream: str, chain_id: str, first: int) -> Iterator[tuple[int, Any]]:
    """``(seq, @timestamp)`` of the first ``TAIL`` records from seq ``first`` on (for the checkpoint promise)."""
    query = {"bool": {"filter": [{"term": {"chain.id": chain_id}}, {"range": {"chain.seq": {"gte": first}}}]}}
    hits = search(client, f"/{stream}/_search", {
        "size": TAIL, "query": query, "sort": [{"chain.seq": "asc"}], "track_total_hits": False,
        "_source": ["@timestamp", "chain.seq"]})["hits"]["hits"]
    for hit in hits:
        src = hit.get("_source") or {}
        seq = (src.get("chain") or {}).get("seq") if isinstance(src, dict) else None
        if type(seq) is int:
            yield seq, src.get("@timestamp")


def failures(client: Elasticsearch, stream: str, chain_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Documents of ``chain_id`` in the stream's failure store: writes Elasticsearch answered 201 for but did not
    index (``"failure_store":"used"``). ``[]`` when the stream has none (or the server has no failure stores)."""
    prefix = f"{chain_id}:"
    out: list[dict[str, Any]] = []
    try:
        hits = search(client, f"/{stream}::failures/_search", {
            "size": limit, "query": {"prefix": {"document.id": prefix}}, "sort": [{"@timestamp": "asc"}],
            "_source": ["document.id", "error.type", "error.message"]})["hits"]["hits"]
    except es.EsError as exc:
        if _missing_index(exc) or exc.reason == "http_400":
            return []
        raise
    for hit in hits:
        src = hit.get("_source") or {}
        doc, err = src.get("document") or {}, src.get("error") or {}
        suffix = str(doc.get("id", "")).removeprefix(prefix)
        out.append({"seq": int(suffix) if suffix.isdigit() else None, "id": doc.get("id"),
                    "error": f"{err.get('type')}: {str(err.get('message'))[:200]}"})
    return out


def chains(client: Elasticsearch, stream: str) -> list[str]:
    """Every chain id with records in ``stream`` (composite aggregation: no limit on their number)."""
    names: list[str] = []
    after: dict[str, Any] | None = None
    while True:
        comp: dict[str, Any] = {"size": 1000, "sources": [{"id": {"terms": {"field": "chain.id"}}}]}
        if after:
            comp["after"] = after
        agg = search(client, f"/{stream}/_search", {
            "size": 0, "query": {"exists": {"field": "chain.seq"}}, "aggs": {"c": {"composite": comp}}})
        result = agg["aggregations"]["c"]
        names += [b["key"]["id"] for b in result["buckets"]]
        after = result.get("after_key")
        if not result["buckets"] or not after:
            return names
