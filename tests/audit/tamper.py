"""Tampering with a stored chain the way an attacker with write access to the storage would, through one
interface for both sinks (the local store's files, Elasticsearch's documents)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from elasticsearch import Elasticsearch

from audit.canonical import canonicalize, loads
from audit.chain import Head, record_hash, seal
from audit.sinks.elasticsearch import checkpoint_stream_name


def forge(event: dict[str, Any], chain: str, seq: int, prev_hash: str) -> dict[str, Any]:
    """A record with a valid hash of its own, linked to ``prev_hash``: what a forger would write."""
    body = {k: v for k, v in event.items() if k != "chain"}
    doc, _ = seal(body, Head(chain, seq, prev_hash))
    return json.loads(canonicalize(doc))  # keys in RFC 8785 order: stored compactly, it is the canonical form


def resealed(lines: list[bytes], chain: str, seq: int) -> list[bytes]:
    """The stored ``lines`` with record ``seq`` edited and the chain sealed again from there (every hash and link
    consistent): what the host writes when it rewrites history."""
    head, out = Head(chain, seq, loads(lines[seq - 1]).value["chain"]["hash"]), lines[:seq]
    for i, line in enumerate(lines[seq:], seq):
        doc = loads(line).value
        del doc["chain"]
        if i == seq:
            doc["message"] = "nothing happened here"
        sealed, head = seal(doc, head)
        out.append(canonicalize(sealed))
    return out


def rehash_from(docs: list[dict[str, Any]], start: int) -> None:
    """Recompute every hash and link from ``start`` on (rewriting history consistently)."""
    for i in range(start, len(docs)):
        if i > 0:
            docs[i]["chain"]["prev_hash"] = docs[i - 1]["chain"]["hash"]
        docs[i]["chain"]["hash"] = record_hash(docs[i])


class LocalTamper:
    def __init__(self, store: Path, chain: str) -> None:
        self.dir = store / chain
        self.chain = chain
        (self.segment,) = sorted(self.dir.glob("records-*.jsonl"))
        self.docs = [json.loads(line) for line in self.segment.read_text().splitlines()]

    def save(self) -> None:
        self.segment.write_bytes(b"".join((d if isinstance(d, bytes) else canonicalize(d)) + b"\n"
                                          for d in self.docs))

    def doc(self, seq: int) -> dict[str, Any]:
        return next(d for d in self.docs if d["chain"]["seq"] == seq)

    def replace(self, seq: int, doc: dict[str, Any]) -> None:
        self.docs[self._index(seq)] = doc
        self.save()

    def delete(self, *seqs: int) -> None:
        self.docs = [d for d in self.docs if d["chain"]["seq"] not in seqs]
        self.save()

    def insert_after(self, seq: int, doc: dict[str, Any]) -> None:
        self.docs.insert(self._index(seq) + 1, doc)
        self.save()

    def append(self, doc: dict[str, Any]) -> None:
        self.docs.append(doc)
        self.save()

    def replace_raw(self, seq: int, data: bytes) -> None:
        """Store ``data`` as record ``seq``'s line, byte for byte (the tamper handle reads no more after this)."""
        self.docs[self._index(seq)] = data  # type: ignore[call-overload]
        self.save()

    def swap(self, a: int, b: int) -> None:
        i, j = self._index(a), self._index(b)
        self.docs[i], self.docs[j] = self.docs[j], self.docs[i]
        self.save()

    def duplicate(self, seq: int) -> None:
        self.insert_after(seq, dict(self.doc(seq)))

    def rewrite(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.save()

    def checkpoints(self) -> dict[int, str]:
        return {int(p.stem): p.read_text() for p in (self.dir / "checkpoints").glob("*.note")}

    def put_checkpoint(self, size: int, note: str, replace: bool = True) -> None:
        name = f"{size:020d}.note" if replace else f"{10**19 + size:020d}.note"  # beside it, validly named
        (self.dir / "checkpoints" / name).write_text(note)

    def _index(self, seq: int) -> int:
        return next(i for i, d in enumerate(self.docs) if d["chain"]["seq"] == seq)


class EsTamper:
    """Documents of the records stream and of the checkpoint stream, changed in place (optimistic concurrency)."""

    def __init__(self, url: str, stream: str, chain: str) -> None:
        self.es = Elasticsearch(url)
        self.stream, self.chain = stream, chain
        self.cp_stream = checkpoint_stream_name(stream)
        self.es.indices.refresh(index=f"{stream},{self.cp_stream}")
        hits = self.es.search(index=f"{stream},{self.cp_stream}", size=10000, seq_no_primary_term=True,
                              query={"match_all": {}})["hits"]["hits"]
        self.hits = {h["_id"]: h for h in hits}
        self.index = next(h["_index"] for h in hits if "seq" in h["_source"].get("chain", {}))
        self.docs = sorted((h["_source"] for h in hits if "seq" in h["_source"].get("chain", {})),
                           key=lambda d: d["chain"]["seq"])

    def _id(self, seq: int) -> str:
        return f"{self.chain}:{seq}"

    def doc(self, seq: int) -> dict[str, Any]:
        return dict(self.hits[self._id(seq)]["_source"])

    def _put(self, doc_id: str, doc: dict[str, Any], stream: str | None = None) -> None:
        self.put_raw(doc_id, canonicalize(doc), stream)

    def put_raw(self, doc_id: str, data: bytes, stream: str | None = None) -> None:
        """Store ``data`` as the document's source, byte for byte."""
        hit = self.hits.get(doc_id)
        headers = {"content-type": "application/json", "accept": "application/json"}
        if hit is None:
            self.es.perform_request("PUT", f"/{stream or self.stream}/_create/{quote(doc_id, safe='')}?refresh=true",
                                    body=data, headers=headers)
            return
        self.es.perform_request(
            "PUT", f"/{hit['_index']}/_doc/{quote(doc_id, safe='')}?refresh=true&if_seq_no={hit['_seq_no']}"
            f"&if_primary_term={hit['_primary_term']}", body=data, headers=headers)

    def replace(self, seq: int, doc: dict[str, Any]) -> None:
        self._put(self._id(seq), doc)

    def replace_raw(self, seq: int, data: bytes) -> None:
        self.put_raw(self._id(seq), data)

    def delete(self, *seqs: int) -> None:
        for seq in seqs:
            self.es.delete(index=self.hits[self._id(seq)]["_index"], id=self._id(seq), refresh=True)

    def insert_after(self, seq: int, doc: dict[str, Any]) -> None:
        self._put(f"{self.chain}:forged-{seq}", doc)

    def append(self, doc: dict[str, Any]) -> None:
        self._put(self._id(doc["chain"]["seq"]), doc)

    def swap(self, a: int, b: int) -> None:
        doc_a, doc_b = self.doc(a), self.doc(b)
        self._put(self._id(a), doc_b)
        self._put(self._id(b), doc_a)

    def duplicate(self, seq: int) -> None:
        self._put(f"{self.chain}:copy-{seq}", self.doc(seq))

    def rewrite(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            self._put(self._id(doc["chain"]["seq"]), doc)

    def checkpoints(self) -> dict[int, str]:
        return {h["_source"]["checkpoint"]["size"]: h["_source"]["checkpoint"]["note"]
                for h in self.hits.values() if "checkpoint" in h["_source"]}

    def put_checkpoint(self, size: int, note: str, replace: bool = True) -> None:
        doc_id = f"{self.chain}:checkpoint:{size}" if replace else f"{self.chain}:checkpoint:{size}-extra"
        root = self.hits.get(f"{self.chain}:checkpoint:{size}", {}).get("_source", {}).get("checkpoint", {})
        self._put(doc_id, {"@timestamp": "2026-01-01T00:00:00Z", "chain": {"id": self.chain},
                           "checkpoint": {"size": size, "root": root.get("root", ""), "note": note}}, self.cp_stream)


def drop_checkpoint(target: LocalTamper | EsTamper, size: int) -> None:
    if isinstance(target, LocalTamper):
        (target.dir / "checkpoints" / f"{size:020d}.note").unlink()
    else:
        doc_id = f"{target.chain}:checkpoint:{size}"
        target.es.delete(index=target.hits[doc_id]["_index"], id=doc_id, refresh=True)
