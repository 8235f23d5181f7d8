"""Offline receipts for one record in the C2SP tlog-proof format (https://c2sp.org/tlog-proof).

::

    c2sp.org/tlog-proof@v1
    extra <base64 of the record's hashed body, zlib-compressed>
    index <seq>
    <base64 hash>            one per line: the RFC 9162 §2.1.3 inclusion proof, leaf side first
    <empty line>
    <the tree checkpoint, a signed note, with the witnesses' cosignature lines>

The record rides in the spec's ``extra`` line (application-defined) as its hashed body: its RFC 8785 bytes without
``chain.hash``, which is the SHA-256 of exactly those bytes and so is put back by the verifier. The body is
compressed (RFC 1950) with a preset dictionary the zlib header names by its Adler-32 (audit/proof_dictionary.py).
Together these keep a receipt from a ten-million-record log under 2 KiB. An extra line holding a whole record
uncompressed (receipts made before compression; it starts with ``{``) is read as it is.

The record is not trusted for being there: the leaf hash (RFC 9162 §2.1.1) of the rebuilt stored bytes must lead,
through the proof, to the root the log signed. ``check`` needs nothing but the receipt, the log's public key and
(optionally) witness keys: the record may have been deleted since. DEFLATE encodings are not unique (the padding
bits after the last block are free), so two receipts may differ in bytes and prove the same thing; what a receipt
proves, no change to it can alter.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint as cp
from audit import merkle
from audit.canonical import CanonicalError, canonicalize, loads
from audit.chain import FIELD, record_hash
from audit.cosign import WitnessKey, cosigned
from audit.proof_dictionary import BY_ID, V1

HEADER = "c2sp.org/tlog-proof@v1"
NOT_A_RECORD = "the record is not a sealed audit record (not canonical JSON with a chain object)"
RECORD_LIMIT = 4 * 1024 * 1024  # far above any record the shipper chains (journal lines stop at 1 MiB)


class ReceiptError(ValueError):
    """The receipt does not prove its record; the message is the one reason."""


@dataclass(frozen=True)
class Receipt:
    record: bytes
    index: int
    proof: tuple[bytes, ...]
    note: str


def build(record: bytes, index: int, proof: list[bytes], note: str) -> str:
    parsed = loads(record)
    del parsed.value[FIELD]["hash"]
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY, V1)
    extra = packer.compress(canonicalize(parsed.value, parsed.fast)) + packer.flush()
    lines = [HEADER, f"extra {base64.b64encode(extra).decode()}", f"index {index}"]
    lines += [base64.b64encode(h).decode() for h in proof]
    return "\n".join(lines) + "\n\n" + note


def parse(text: str) -> Receipt:
    head, sep, note = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or lines[0] != HEADER:
        raise ReceiptError(f"not a receipt: the first line is not {HEADER!r}")
    if len(lines) < 3 or not lines[1].startswith("extra "):
        raise ReceiptError("the receipt carries no record (no 'extra' line)")
    index_text = lines[2].removeprefix("index ")
    if not lines[2].startswith("index ") or not cp.DECIMAL.fullmatch(index_text):
        raise ReceiptError("the receipt's index line is not 'index <decimal>'")
    try:
        extra = base64.b64decode(lines[1][6:], validate=True)
        proof = tuple(base64.b64decode(line, validate=True) for line in lines[3:])
    except ValueError:  # binascii.Error, or non-ASCII text
        raise ReceiptError("the record or a proof hash is not base64") from None
    if [base64.b64encode(v).decode() for v in (extra, *proof)] != [lines[1][6:], *lines[3:]]:
        raise ReceiptError("the record or a proof hash is not in canonical base64")
    return Receipt(_stored(extra if extra.startswith(b"{") else _inflate(extra)), int(index_text), proof, note)


def _stored(body: bytes) -> bytes:
    """The record as stored: ``body`` with its ``chain.hash`` (the SHA-256 of ``body``) put back, or ``body`` as it
    is when it already carries one."""
    try:
        parsed = loads(body)
        link = parsed.value[FIELD]
        if "hash" in link:
            return body
        parsed.value[FIELD] = {**link, "hash": hashlib.sha256(body).hexdigest()}
        return canonicalize(parsed.value, parsed.fast)
    except (CanonicalError, KeyError, TypeError):
        raise ReceiptError(NOT_A_RECORD) from None


def _inflate(data: bytes) -> bytes:
    """The record a zlib stream holds, with the preset dictionary its header names; bounded (no zip bomb)."""
    if len(data) < 2 or (data[0] * 256 + data[1]) % 31 or data[0] & 0x0F != zlib.DEFLATED:
        raise ReceiptError("the extra line holds neither a record nor a zlib stream (RFC 1950 header)")
    dictionary = b""
    if data[1] & 0x20:  # FDICT: the Adler-32 of the dictionary follows the header
        dictionary = BY_ID.get(int.from_bytes(data[2:6], "big"), b"")
        if not dictionary:
            raise ReceiptError(f"the record is compressed with an unknown dictionary (id {data[2:6].hex()})")
    inflater = zlib.decompressobj(zdict=dictionary) if dictionary else zlib.decompressobj()
    try:
        record = inflater.decompress(data, RECORD_LIMIT + 1)
    except zlib.error as exc:
        raise ReceiptError(f"the compressed record is corrupt ({exc})") from None
    if len(record) > RECORD_LIMIT:
        raise ReceiptError(f"the compressed record inflates past {RECORD_LIMIT} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ReceiptError("the compressed record is truncated or followed by other bytes")
    return record


def check(text: str, key: Ed25519PublicKey, witnesses: Sequence[WitnessKey] = (), quorum: int = 0) -> dict[str, Any]:
    """Verify a receipt; returns what it proves, raises ``ReceiptError`` with the first reason it does not."""
    receipt = parse(text)
    try:
        note = cp.parse(receipt.note)
    except (cp.CheckpointError, UnicodeError) as exc:
        raise ReceiptError(f"the checkpoint cannot be read: {exc}") from None
    if not cp.is_tree(note, key):
        raise ReceiptError("the checkpoint is not a tree checkpoint signed by the log's public key")
    doc = _record(receipt.record, note, receipt.index)
    try:
        merkle.verify_inclusion(merkle.leaf_hash(receipt.record), receipt.index, note.size, receipt.proof, note.root)
    except merkle.ProofError as exc:
        raise ReceiptError(f"the record is not entry {receipt.index} of the signed tree: {exc}") from None
    names = [w.name for w in witnesses if cosigned(note, w) is not None]
    if len(names) < quorum:
        raise ReceiptError(f"{len(names)} of the {len(witnesses)} witnesses given cosigned the checkpoint "
                           f"({', '.join(names) or 'none'}); {quorum} required")
    return {"valid": True, "chain": note.chain_id, "seq": receipt.index, "tree_size": note.size,
            "witnesses": names, "record": doc}


def _record(data: bytes, note: cp.Checkpoint, index: int) -> Any:
    """The record itself must be a sealed record of this chain at ``index`` in its stored (RFC 8785) form."""
    try:
        parsed = loads(data)
        doc = parsed.value
        link = doc["chain"]
        seq, stored = link["seq"], link["hash"]
        same = canonicalize(doc, parsed.fast) == data and record_hash(doc, parsed.fast) == stored
    except (CanonicalError, KeyError, TypeError, AttributeError):
        raise ReceiptError(NOT_A_RECORD) from None
    if link.get("id") != note.chain_id:
        raise ReceiptError(f"the record is of chain {link.get('id')!r}, the checkpoint of {note.chain_id!r}")
    if seq != index:
        raise ReceiptError(f"the record's seq {seq!r} is not the receipt's index {index}")
    if not same:
        raise ReceiptError("the record's content does not match its own hash (modified)")
    return doc
