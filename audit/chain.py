"""The hash chain: per chain id, ``seq`` from 0 without gaps, each record linking to its predecessor.

``hash = SHA-256(JCS(record))`` where the record carries ``chain.id``, ``chain.seq`` and ``chain.prev_hash`` (but not
``chain.hash`` itself). Pure functions over values; no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from audit.canonical import canonicalize

GENESIS = "0" * 64
FIELD = "chain"  # the reserved top-level field; a source event carrying it is refused, never overwritten


class ChainError(Exception):
    """A record cannot be chained (or a stored chain state is unusable); the message says why."""


@dataclass(frozen=True)
class Head:
    """Where a chain stands: the next sequence number to assign and the hash of the last record."""

    chain_id: str
    next_seq: int = 0
    hash: str = GENESIS


def record_hash(doc: dict[str, Any], fast: bool = False) -> str:
    """SHA-256 (hex) over the canonical form of ``doc`` without ``chain.hash``."""
    link = {k: v for k, v in doc[FIELD].items() if k != "hash"}
    body = dict(doc)
    body[FIELD] = link
    return hashlib.sha256(canonicalize(body, fast)).hexdigest()


_MEMBER = b'"chain":{'
_HASHED = b'"chain":{"hash":"'


def canonical_link(line: bytes, chain_json: bytes, seq: int, prev: str) -> str | None:
    """The stored hash when ``line`` is record ``seq`` of the chain (``chain_json``: the id as RFC 8785 text) linked
    to ``prev``, written as its RFC 8785 bytes with ``"hash":"<hex>",`` opening the chain object; else None.

    No parsing: cut the hash member out and hash the rest. Sound because the line must hold exactly one
    ``"chain":{`` and the cut cannot create another: when the digest matches a hash the shipper computed (one a
    checkpoint vouches for, directly or through the links after it), the rest is the RFC 8785 form of a sealed
    record (collision resistance), whose only ``"chain":{`` is its top-level chain object; so the line is that
    record with its own hash added, and the full path would read the same seq, prev_hash and verdict.
    A line nothing vouches for (the unsealed tail) carries a digest its writer chose. The framing of an object
    member is checked here (one JSON object, ``{`` ... ``}``, the member after ``{`` or ``,``), but that is all
    framing can prove: a line with the member nested deeper, or with bytes elsewhere that are not RFC 8785 JSON,
    still passes. So callers take the shortcut only below the last signed checkpoint (``verify.parse_record``'s
    ``sealed``) and parse the unsealed lines in full (tests/audit/test_forged_unsealed.py).
    """
    at = line.find(_HASHED)
    if at < 1 or line[at - 1:at] not in (b"{", b",") or line[:1] != b"{" or line[-1:] != b"}" \
            or line.count(_MEMBER) != 1:
        return None
    digest = line[at + 17:at + 81]
    if not line.startswith(b'","id":%s,"prev_hash":"%s","seq":%d}' % (chain_json, prev.encode(), seq), at + 81):
        return None
    if hashlib.sha256(line[:at + 9] + line[at + 83:]).hexdigest().encode() != digest:
        return None
    return digest.decode()


def seal(event: dict[str, Any], head: Head, fast: bool = False) -> tuple[dict[str, Any], Head]:
    """Append ``event`` to the chain at ``head``: the sealed record and the new head."""
    if FIELD in event:
        raise ChainError(f"the top-level field {FIELD!r} is reserved for the audit chain")
    doc = dict(event)
    doc[FIELD] = {"id": head.chain_id, "seq": head.next_seq, "prev_hash": head.hash}
    digest = record_hash(doc, fast)
    doc[FIELD]["hash"] = digest
    return doc, Head(head.chain_id, head.next_seq + 1, digest)


def doc_id(chain_id: str, seq: int) -> str:
    """The deterministic Elasticsearch ``_id`` of a record: a retry can only ever hit the same document."""
    return f"{chain_id}:{seq}"
