"""A line past the last checkpoint carries a hash nothing vouches for: its writer chose it. ``canonical_link``
(audit/chain.py) may only shortcut lines framed as the shipper writes them, so that a forged last line whose hash
is computed over the cut is parsed in full and reported, the same way by the local store's fast (chunked, in
order) and full paths. Built in process: three genuine records, then the forged line linked to the third."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint as cp
from audit.canonical import canonicalize
from audit.chain import Head, canonical_link, seal
from audit.readers import localstore as reader
from audit.verify import checked_seqs, verify, verify_in_order
from audit.verify_cli import local_records, verify_store

CHAIN = "h1"
CHAIN_JSON = b'"h1"'
KEY = Ed25519PrivateKey.generate()


def genuine(count: int) -> tuple[list[bytes], Head]:
    head, out = Head(CHAIN), []
    for i in range(count):
        doc, head = seal({"@timestamp": "2026-01-01T00:00:00Z", "n": i}, head)
        out.append(canonicalize(doc))
    return out, head


def forge(before: bytes, head: Head, after: bytes) -> bytes:
    """``before`` + the chain member of record ``head.next_seq`` + ``after``, its hash computed over the cut (what
    ``canonical_link`` hashes), as a forger would."""
    member = b'"chain":{"id":%s,"prev_hash":"%s","seq":%d}' % (CHAIN_JSON, head.hash.encode(), head.next_seq)
    digest = hashlib.sha256(before + member + after).hexdigest().encode()
    return before + member.replace(b'"chain":{', b'"chain":{"hash":"%s",' % digest, 1) + after


RECORD = b'"message":"forged","n":3}'
# name: (bytes before the member, bytes after it, the kind and seq the full path reports, its detail's start). The
# forger hashed the bytes as written; the full path hashes the canonical content, hence "does not match".
FORGERIES: dict[str, tuple[bytes, bytes, tuple[str, int | None], str]] = {
    "bare chain member, not an object": (b"", b"", ("inserted", None), "stored entry #3 is not a chained record"),
    "object after a leading space": (b' {"@timestamp":"2026-01-01T00:00:00Z",', b"," + RECORD, ("modified", 3),
                                     "content does not match its hash"),
    "object with a trailing space": (b'{"@timestamp":"2026-01-01T00:00:00Z",', b"," + RECORD + b" ", ("modified", 3),
                                     "content does not match its hash"),
    "member after a space": (b'{"@timestamp":"2026-01-01T00:00:00Z", ', b"," + RECORD, ("modified", 3),
                             "content does not match its hash"),
}


def store_of(tmp: Path, lines: list[bytes]) -> Path:
    chain_dir = tmp / "store" / CHAIN
    (chain_dir / "checkpoints").mkdir(parents=True)
    (chain_dir / f"records-{0:020d}.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return tmp / "store"


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_last_line_is_reported_alike_by_the_fast_and_full_paths(tmp_path: Path, name: str) -> None:
    before, after, (kind, seq), detail = FORGERIES[name]
    lines, head = genuine(3)
    forged = forge(before, head, after)
    assert canonical_link(forged, CHAIN_JSON, 3, head.hash) is None
    store = store_of(tmp_path, [*lines, forged])
    full = verify(CHAIN, local_records(store / CHAIN), [], KEY.public_key())
    assert [(f.kind, f.seq) for f in full.findings] == [(kind, seq)]
    assert full.findings[0].detail.startswith(detail)
    assert (full.records, full.last_seq) == ((4, 3) if kind == "modified" else (3, 2))
    assert verify_store(store, CHAIN, KEY.public_key(), None).as_dict() == full.as_dict()


@pytest.mark.parametrize("name", list(FORGERIES))
def test_fast_path_from_a_trusted_checkpoint_declines_the_forged_last_line(tmp_path: Path, name: str) -> None:
    before, after, _, _ = FORGERIES[name]
    lines, head = genuine(3)
    store = store_of(tmp_path, [*lines, forge(before, head, after)])
    trusted = cp.parse(cp.sign(KEY, CHAIN, 3, head.hash))
    lay = reader.layout(store, CHAIN)
    chunks = reader.chunks(lay, checked_seqs(lay.notes, CHAIN, KEY.public_key(), trusted), 1)
    assert verify_in_order(CHAIN, (summary for summary, _ in chunks), [], KEY.public_key(), trusted) is None
    full = verify(CHAIN, local_records(store / CHAIN), [], KEY.public_key(), trusted)
    assert not full.intact
    assert verify_store(store, CHAIN, KEY.public_key(), trusted).as_dict() == full.as_dict()


def test_record_whose_first_key_is_chain_takes_the_shortcut() -> None:
    """The member right after the opening brace (no event key sorts before ``chain``) is the shipper's form."""
    doc, head = seal({"n": 0, "x": "y"}, Head(CHAIN))
    line = canonicalize(doc)
    assert line.startswith(b'{"chain":{"hash":"')
    assert canonical_link(line, CHAIN_JSON, 0, doc["chain"]["prev_hash"]) == head.hash

