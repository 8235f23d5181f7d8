"""A line past the last checkpoint carries a hash its writer chose, so framing it like the shipper's form is not
enough for ``canonical_link``'s shortcut: the chain member nested in another object, bytes before it that are not
JSON or not RFC 8785. Such lines are parsed in full (``verify.parse_record``'s ``sealed``) and reported, by the full
path, by the local store's fast paths (which re-read the unsealed lines) and by ``verify --es``. Before, all of them
counted the forged line as a record and said INTACT."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint as cp
from audit.chain import Head, canonical_link
from audit.readers.localstore import records_of_lines
from audit.verify import parses_as_record, sealed_size, verify
from audit.verify_cli import local_records, verify_store
from tests.audit.kit import kinds
from tests.audit.tamper import EsTamper
from tests.audit.test_forged_tail import CHAIN, CHAIN_JSON, KEY, forge, genuine, store_of
from tests.audit.test_verify_es import Fleet

# name: (bytes before the member, bytes after it, the finding the full parse gives)
FRAMED: dict[str, tuple[bytes, bytes, tuple[str, int | None]]] = {
    "member nested in another object": (b'{"x":{', b"}}", ("inserted", None)),
    "not JSON before the member": (b'{"a":,', b"}", ("inserted", None)),
    "respelled number before the member": (b'{"a":1.0,', b"}", ("modified", 3)),
}


def sealed_store(tmp: Path, forged: bytes) -> Path:
    """Three genuine records under a signed checkpoint of size 3, then ``forged`` as record 3."""
    lines, head = genuine(3)
    store = store_of(tmp, [*lines, forged])
    (store / CHAIN / "checkpoints" / f"{3:020d}.note").write_text(cp.sign(KEY, CHAIN, 3, head.hash))
    return store


@pytest.mark.parametrize("name", list(FRAMED))
def test_framed_forgery_takes_the_shortcut_only_where_a_checkpoint_vouches(name: str) -> None:
    before, after, _ = FRAMED[name]
    lines, head = genuine(3)
    forged = forge(before, head, after)
    assert canonical_link(forged, CHAIN_JSON, 3, head.hash) is not None  # framing alone cannot refute it
    checkpoint = [cp.sign(KEY, CHAIN, 3, head.hash)]
    vouched = verify(CHAIN, records_of_lines([*lines, forged], CHAIN, sealed=4), checkpoint, KEY.public_key())
    assert vouched.intact  # what a caller that claims the line sealed gets: why only checkpoints may say so


def test_sealed_size_is_the_largest_checkpoint_signed_by_the_key_for_the_chain() -> None:
    _, head = genuine(3)
    mine = cp.sign(KEY, CHAIN, 3, head.hash)
    assert sealed_size(CHAIN, [mine], KEY.public_key()) == 3
    assert sealed_size(CHAIN, [cp.sign(KEY, "other", 9, head.hash), mine], KEY.public_key()) == 3
    forged = cp.sign(Ed25519PrivateKey.generate(), CHAIN, 9, head.hash)
    assert sealed_size(CHAIN, [forged], KEY.public_key()) == 0


def test_parses_as_record_tells_a_record_from_a_framed_forgery() -> None:
    lines, head = genuine(3)
    assert all(parses_as_record(line, CHAIN_JSON) for line in lines)
    assert not parses_as_record(forge(b'{"x":{', head, b"}}"), CHAIN_JSON)
    assert not parses_as_record(lines[0], b'"other"')


def test_unsealed_is_the_default_even_for_the_first_record() -> None:
    """A reader given no checkpoint shortcuts nothing: a framed forgery as record 0 is reported."""
    forged = forge(b'{"x":{', Head(CHAIN), b"}}")
    report = verify(CHAIN, records_of_lines([forged], CHAIN), [], KEY.public_key())
    assert [(f.kind, f.seq) for f in report.findings] == [("inserted", None)]


def test_framed_forgery_at_the_sealed_size_read_off_the_line_is_reported() -> None:
    """After a line that is no record, the next line's seq is read off it (no expectation): at exactly the sealed
    size it is unsealed, and parsed in full."""
    lines, head = genuine(3)
    checkpoint = [cp.sign(KEY, CHAIN, 3, head.hash)]
    forged = forge(b'{"x":{', head, b"}}")
    stream = records_of_lines([*lines, b"not a record", forged], CHAIN, sealed=3)
    report = verify(CHAIN, stream, checkpoint, KEY.public_key())
    assert [(f.kind, f.seq) for f in report.findings] == [("inserted", None), ("inserted", None)]


def test_framed_forgery_below_the_sealed_size_breaks_the_link_to_the_next_record() -> None:
    """Below the sealed size the shortcut takes a framed line at its word, also when its seq is read off it (after a
    line that is no record): its chosen hash is then not what the next genuine record links to."""
    lines, _ = genuine(5)
    record_1 = lines[1][lines[1].index(b'"hash":"') + 8:][:64].decode()
    forged = forge(b'{"x":{', Head(CHAIN, 2, record_1), b"}}")
    checkpoint = [cp.sign(KEY, CHAIN, 5, lines[4][lines[4].index(b'"hash":"') + 8:][:64].decode())]
    stream = records_of_lines([*lines[:2], b"junk", forged, *lines[3:]], CHAIN, sealed=5)
    report = verify(CHAIN, stream, checkpoint, KEY.public_key())
    assert [(f.kind, f.seq) for f in report.findings] == [("broken-link", 3), ("inserted", None)]


@pytest.mark.parametrize("name", list(FRAMED))
def test_framed_forgery_past_the_last_checkpoint_is_reported_by_every_path(tmp_path: Path, name: str) -> None:
    before, after, finding = FRAMED[name]
    _, head = genuine(3)
    store = sealed_store(tmp_path, forge(before, head, after))
    notes = [(store / CHAIN / "checkpoints" / f"{3:020d}.note").read_text()]
    full = verify(CHAIN, local_records(store / CHAIN), notes, KEY.public_key())
    assert [(f.kind, f.seq) for f in full.findings] == [finding]
    for workers in (1, 2):
        fast = verify_store(store, CHAIN, KEY.public_key(), None, workers=workers, chunk_bytes=64)
        assert fast.as_dict() == full.as_dict()
    trusted = cp.parse(notes[0])
    from_trusted = verify_store(store, CHAIN, KEY.public_key(), trusted)
    assert [(f.kind, f.seq) for f in from_trusted.findings] == [finding]


@pytest.mark.elasticsearch
def test_framed_forgery_past_the_last_checkpoint_in_elasticsearch_is_reported(tmp_path: Path, elasticsearch: str,
                                                                              es_namespace: str) -> None:
    """The host operator writes a document after the last checkpoint, linked to the last record, its hash computed
    over its own bytes (a respelled number): ``verify --es`` reads it in full and reports it."""
    fleet = Fleet(tmp_path, elasticsearch, es_namespace)
    fleet.ship(30)  # checkpoints every 10 records: 30 is the last
    tamper = EsTamper(fleet.url, fleet.stream, "h1")
    last = tamper.doc(29)["chain"]
    member = b'"chain":{"id":"h1","prev_hash":"%s","seq":30}' % last["hash"].encode()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()  # fresh: not yet due a checkpoint
    forged = forge(b'{"@timestamp":"%s","a":1.0,' % now, _Head(last["hash"]), b',"message":"forged"}')
    assert member.replace(b'"chain":{', b"") in forged
    tamper.put_raw("h1:30", forged)
    code, report = fleet.verify()
    assert (code, kinds(report)) == (1, [("modified", 30)])


class _Head:
    """The chain head ``forge`` links the forged record to: record 29 of chain h1."""

    def __init__(self, digest: str) -> None:
        self.hash, self.next_seq = digest, 30
