"""The local store's fast verify path gives exactly the full path's report: on intact chains, on every kind of
tampering, and on lines whose content is genuine but whose bytes are not the shipper's RFC 8785 form."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from audit import checkpoint as cp
from audit.canonical import canonicalize, dumps
from audit.chain import GENESIS, Head, canonical_link, seal
from audit.readers import localstore as reader
from audit.sinks import localstore
from audit.verify import Report, checked_seqs, scan_chunk, verify, verify_chunked, verify_in_order
from audit.verify_cli import local_records, verify_store
from tests.audit.kit import keys, ship_once, verify_json, write_journal
from tests.audit.tamper import LocalTamper, drop_checkpoint, forge
from tests.audit.test_tamper import CASES

CHAIN = "h1"
RECORDS = 55  # checkpoints of sizes 10, 20, 30, 40, 50, 55


class Chain:
    """A freshly shipped local store chain, its tamper handle and its keys."""

    def __init__(self, tmp: Path, records: int = RECORDS) -> None:
        self.key_file, self.public_file = keys(tmp / "keys")
        self.public = cp.load_public(self.public_file)
        journal = tmp / "journal.jsonl"
        write_journal(journal, records)
        self.store = tmp / "store"
        assert ship_once([journal], self.key_file, tmp / "spool", store=self.store) == 0
        self.tamper = LocalTamper(self.store, CHAIN)
        self.dir = self.store / CHAIN

    def full(self, trusted: cp.Checkpoint | None = None) -> Report:
        """The full path alone: parse, canonicalise and hash every record, reorder window, walker."""
        return verify(CHAIN, local_records(self.dir), localstore.read_checkpoints(self.dir), self.public, trusted)

    def in_order(self, trusted: cp.Checkpoint | None = None, workers: int = 1) -> Report | None:
        """The fast path alone: None when it declines and leaves the chain to the full path."""
        lay = reader.layout(self.store, CHAIN)
        chunks = reader.chunks(lay, checked_seqs(lay.notes, CHAIN, self.public, trusted), workers)
        return verify_in_order(CHAIN, (summary for summary, _ in chunks), lay.notes, self.public, trusted)

    def fast(self, trusted: cp.Checkpoint | None = None, workers: int = 1) -> Report:
        return verify_store(self.store, CHAIN, self.public, trusted, workers=workers)

    def lines(self) -> list[bytes]:
        return list(localstore.read_lines(self.dir))

    def write_lines(self, lines: list[bytes]) -> None:
        (segment,) = localstore.segments(self.dir)
        segment.write_bytes(b"".join(line + b"\n" for line in lines))


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return Chain(tmp_path)


def test_untouched_chain_takes_the_fast_path_and_matches_the_full_report(chain: Chain) -> None:
    full = chain.full()
    assert full.intact and full.records == RECORDS
    fast = chain.in_order()
    assert fast is not None and fast.as_dict() == full.as_dict()


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_chain_gets_the_same_report_as_the_full_path(chain: Chain, case: str) -> None:
    tamper, _ = CASES[case]
    tamper(chain.tamper)
    full = chain.full()
    assert not full.intact
    assert chain.fast().as_dict() == full.as_dict()
    fast = chain.in_order()
    assert fast is None or fast.as_dict() == full.as_dict()


RECORD_TAMPERING = ["modified field", "deleted record", "inserted forgery", "swapped pair", "duplicated record"]


@pytest.mark.parametrize("case", RECORD_TAMPERING)
def test_fast_path_declines_every_chain_with_a_bad_record(chain: Chain, case: str) -> None:
    CASES[case][0](chain.tamper)
    assert chain.in_order() is None


def _other_key_checkpoint(chain: Chain, tmp: Path) -> None:
    other, _ = keys(tmp / "other-keys")
    chain.tamper.put_checkpoint(30, cp.sign(cp.load_private(other), CHAIN, 30, chain.tamper.doc(29)["chain"]["hash"]))


def _foreign_checkpoint(chain: Chain, tmp: Path) -> None:
    root = chain.tamper.doc(19)["chain"]["hash"]
    chain.tamper.put_checkpoint(20, cp.sign(cp.load_private(chain.key_file), "other-host", 20, root), replace=False)


def _truncated_unsealed_tail(chain: Chain, tmp: Path) -> None:
    drop_checkpoint(chain.tamper, RECORDS)
    chain.tamper.delete(52, 53, 54)


def _rewritten_history(chain: Chain, tmp: Path) -> None:
    CASES["history rewritten and rehashed"][0](chain.tamper)


def _truncated_sealed_tail(chain: Chain, tmp: Path) -> None:
    chain.tamper.delete(*range(45, RECORDS))


CHECKPOINT_CASES: dict[str, Callable[[Chain, Path], None]] = {
    "checkpoint signed by another key": _other_key_checkpoint,
    "checkpoint replayed from another chain": _foreign_checkpoint,
    "unsealed tail truncated": _truncated_unsealed_tail,
    "history rewritten and rehashed": _rewritten_history,
    "sealed tail truncated": _truncated_sealed_tail,
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_fast_path_reports_checkpoint_findings_exactly_like_the_full_path(chain: Chain, tmp_path: Path,
                                                                          case: str) -> None:
    CHECKPOINT_CASES[case](chain, tmp_path)
    full = chain.full()
    fast = chain.in_order()
    assert fast is not None, "records are intact and in order: the fast path must judge this chain itself"
    assert fast.as_dict() == full.as_dict()


def test_fast_path_from_a_trusted_checkpoint_after_retention(chain: Chain) -> None:
    trusted = cp.parse(chain.tamper.checkpoints()[30])
    chain.tamper.delete(*range(29))
    for size in (10, 20):
        drop_checkpoint(chain.tamper, size)
    full = chain.full(trusted)
    assert full.intact and full.records == RECORDS - 29
    fast = chain.in_order(trusted)
    assert fast is not None and fast.as_dict() == full.as_dict()
    assert chain.full().as_dict() == chain.fast().as_dict()  # without the trust anchor: missing 0..28


def _reformatted(line: bytes) -> bytes:
    return json.dumps(json.loads(line), indent=1).replace("\n", " ").encode()


def _keys_reordered(line: bytes) -> bytes:
    doc = json.loads(line)
    return json.dumps({k: doc[k] for k in reversed(doc)}, separators=(",", ":")).encode()


def _escaped(line: bytes) -> bytes:
    return line.replace(b'"domain vm-', b'"\\u0064omain vm-', 1)


@pytest.mark.parametrize("reshape", [_reformatted, _escaped, _keys_reordered])
def test_genuine_content_in_other_bytes_is_modified(chain: Chain, reshape: Callable[[bytes], bytes]) -> None:
    """The stored bytes are the contract: a line rewritten with other whitespace, key order, escapes or number
    spelling hashes right as content, yet readers see other text (``1.7e1`` is a float to many). Both paths
    report it ``modified`` at its seq, and nothing else."""
    lines = chain.lines()
    lines[17] = reshape(lines[17])
    chain.write_lines(lines)
    full = chain.full()
    assert [(f.kind, f.seq) for f in full.findings] == [("modified", 17)]
    assert "RFC 8785 form" in full.findings[0].detail
    assert chain.fast().as_dict() == full.as_dict()
    assert chain.in_order() is None


@pytest.mark.parametrize("spelling", [b"1.2347e4", b"12347.0", b"12347e0", b"1.2347E+4"])
def test_respelled_number_is_modified_though_its_value_hashes_right(tmp_path: Path, spelling: bytes) -> None:
    _, public_file = keys(tmp_path / "keys")
    chain_dir = tmp_path / "store" / CHAIN
    (chain_dir / "checkpoints").mkdir(parents=True)
    head, lines = Head(CHAIN), []
    for i in range(3):
        doc, head = seal({"@timestamp": "2026-01-01T00:00:00Z", "bytes": 12347 + i - 1}, head)
        lines.append(canonicalize(doc))
    lines[1] = lines[1].replace(b'"bytes":12347', b'"bytes":' + spelling)
    (chain_dir / f"records-{0:020d}.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    public = cp.load_public(public_file)
    full = verify(CHAIN, local_records(chain_dir), [], public)
    assert [(f.kind, f.seq) for f in full.findings] == [("modified", 1)]
    assert verify_store(tmp_path / "store", CHAIN, public, None).as_dict() == full.as_dict()


def test_line_with_a_duplicate_key_is_refused_though_its_last_value_hashes_right(chain: Chain) -> None:
    """A JSON parser that keeps the last duplicate would read the genuine record; others would show the forged
    first value. The full path refuses the line, and the fast path must not accept it either."""
    lines = chain.lines()
    forged = lines[17].replace(b'{"@timestamp"', b'{"message":"nothing to see here","@timestamp"', 1)
    assert json.loads(forged) == json.loads(lines[17])
    lines[17] = forged
    chain.write_lines(lines)
    full = chain.full()
    assert not full.intact and ("inserted", None) in [(f.kind, f.seq) for f in full.findings]
    assert chain.fast().as_dict() == full.as_dict()


def test_float_record_in_rfc8785_form_is_proved_without_parsing() -> None:
    """1.0 is ``1`` in RFC 8785: the shipper stores that form, and the fast check takes it as it is."""
    doc, _ = seal({"@timestamp": "2026-01-01T00:00:00Z", "ratio": 1.0, "small": 1.5e-7}, Head(CHAIN))
    line = canonicalize(doc)
    summary = scan_chunk([line], frozenset({0}), CHAIN)
    assert (summary.ok, summary.first_seq, summary.first_prev, summary.marks) == (True, 0, GENESIS,
                                                                                   {0: doc["chain"]["hash"]})
    assert scan_chunk([dumps(doc)], frozenset({0}), CHAIN).ok is False  # "ratio":1.0 is not the stored form


def test_ranges_cover_exactly_the_complete_lines(tmp_path: Path) -> None:
    chain_dir = tmp_path / "store" / CHAIN
    chain_dir.mkdir(parents=True)
    (chain_dir / f"records-{0:020d}.jsonl").write_bytes(b"".join(b"%d-%s\n" % (i, b"x" * i) for i in range(40)))
    (chain_dir / f"records-{40:020d}.jsonl").write_bytes(b"a\n\nbb\ntorn")
    lay = reader.layout(tmp_path / "store", CHAIN)
    expected = [b"%d-%s" % (i, b"x" * i) for i in range(40)] + [b"a", b"", b"bb"]
    for chunk in (1, 7, 64, 1 << 20):
        got = [line for r in reader.ranges(lay, chunk) for line in reader.read_range(*r)]
        assert got == expected, chunk
    assert [f.kind for f in lay.findings] == ["stray"]  # the unterminated "torn" is reported, not read


CHUNK = 8192  # ~13 records: many chunks from a small chain


@pytest.fixture(scope="module")
def long_chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return Chain(tmp_path_factory.mktemp("long"), records=400)


def _in_workers(chain: Chain) -> Report:
    """The fast path spread over two forked workers (only done from a process without other threads)."""
    assert threading.active_count() == 1, "a thread is running: local_chunks would not fork, proving nothing"
    assert len(list(reader.ranges(reader.layout(chain.store, CHAIN), CHUNK))) >= 20
    return verify_store(chain.store, CHAIN, chain.public, None, workers=2, chunk_bytes=CHUNK)


def test_two_workers_over_many_chunks_verify_a_chain_intact(long_chain: Chain) -> None:
    report = _in_workers(long_chain)
    assert (report.intact, report.records, report.checkpoints) == (True, 400, 40)
    assert report.as_dict() == long_chain.full().as_dict()


def test_two_workers_find_a_modified_record_deep_in_a_later_chunk(long_chain: Chain) -> None:
    lines = long_chain.lines()
    original = lines[345]
    try:
        lines[345] = original.replace(b'"domain vm-345 started"', b'"domain vm-345 stopped"')
        long_chain.write_lines(lines)
        report = _in_workers(long_chain)
        assert [(f.kind, f.seq) for f in report.findings] == [("modified", 345)]
        assert report.as_dict() == long_chain.full().as_dict()
    finally:
        lines[345] = original
        long_chain.write_lines(lines)


def test_chain_link_broken_between_two_chunks_is_found(long_chain: Chain) -> None:
    """A forged record with a valid hash of its own, placed exactly where a chunk ends: only the stitching of the
    workers' summaries can see that the next chunk does not link to it."""
    ends = {end for _, _, end in reader.ranges(reader.layout(long_chain.store, CHAIN), CHUNK)}
    lines = long_chain.lines()
    offsets = [sum(len(x) + 1 for x in lines[:i + 1]) for i in range(len(lines))]
    boundary = next(i for i in range(100, len(lines)) if offsets[i] in ends)
    original = lines[boundary]
    doc = json.loads(original)
    message = doc["message"].replace("started", "stopped")  # same length: the chunk boundaries stay put
    try:
        lines[boundary] = canonicalize(forge(dict(doc, message=message), CHAIN, boundary,
                                             doc["chain"]["prev_hash"]))
        assert len(lines[boundary]) == len(original)
        long_chain.write_lines(lines)
        assert scan_chunk([lines[boundary]], frozenset(), CHAIN).ok  # the forgery is intact on its own
        report = _in_workers(long_chain)
        assert ("broken-link", boundary + 1) in [(f.kind, f.seq) for f in report.findings]
        assert report.as_dict() == long_chain.full().as_dict()
    finally:
        lines[boundary] = original
        long_chain.write_lines(lines)


def test_cli_verifies_through_the_fast_path_and_agrees_with_the_full_path(chain: Chain) -> None:
    code, report = verify_json("--store", str(chain.store), "--public-key", str(chain.public_file))
    assert (code, report) == (0, chain.full().as_dict())
    CASES["modified field"][0](chain.tamper)
    code, report = verify_json("--store", str(chain.store), "--public-key", str(chain.public_file))
    assert (code, report) == (1, chain.full().as_dict())


def _canonical(line: bytes) -> bytes:
    """The line as its RFC 8785 bytes with the hash opening the chain object (the form ``canonical_link`` reads
    without parsing)."""
    doc = json.loads(line)
    digest = doc["chain"].pop("hash")
    return canonicalize(doc).replace(b'"chain":{', b'"chain":{"hash":"%s",' % digest.encode(), 1)


def test_canonical_line_is_checked_without_parsing(chain: Chain) -> None:
    lines = [_canonical(line) for line in chain.lines()]
    link = json.loads(lines[5])["chain"]
    assert canonical_link(lines[5], b'"h1"', 5, link["prev_hash"]) == link["hash"]
    assert canonical_link(lines[5], b'"h1"', 6, link["prev_hash"]) is None  # not the seq expected there
    assert canonical_link(lines[5].replace(b"vm-5", b"vm-6"), b'"h1"', 5, link["prev_hash"]) is None


@pytest.mark.parametrize("case", ["untouched", *CASES])
def test_store_written_in_canonical_form_gets_the_full_paths_report(chain: Chain, case: str) -> None:
    if case in CASES:
        CASES[case][0](chain.tamper)
    chain.write_lines([_canonical(line) for line in chain.lines()])
    full = chain.full()
    assert full.intact == (case == "untouched")
    assert chain.fast().as_dict() == full.as_dict()
    fast = chain.in_order()
    assert fast is None or fast.as_dict() == full.as_dict()
    if case == "untouched":
        assert fast is not None


def test_hash_moved_into_a_nested_chain_object_is_not_taken_for_the_record(tmp_path: Path) -> None:
    """A record whose own content holds a copy of its chain object (an event can carry anything): moving the hash
    member into that copy leaves the bytes after the cut identical, yet the record then has no hash of its own.
    The full path says so, and the fast path must not be fooled into agreeing with the digest."""
    _, public_file = keys(tmp_path / "keys")
    chain_dir = tmp_path / "store" / CHAIN
    (chain_dir / "checkpoints").mkdir(parents=True)
    first, head = seal({"@timestamp": "2026-01-01T00:00:00Z"}, Head(CHAIN))
    copy = {"id": CHAIN, "prev_hash": head.hash, "seq": 1}
    second, _ = seal({"@timestamp": "2026-01-01T00:00:01Z", "a": {"chain": copy}}, head)
    body = canonicalize({k: v for k, v in second.items() if k != "chain"} | {"chain": copy})
    member = b'"hash":"%s",' % second["chain"]["hash"].encode()
    own_at = body.rindex(b'"chain":{') + 9  # "a" sorts first: the record's own chain object is the last one
    nested_at = body.index(b'"chain":{') + 9
    genuine = body[:own_at] + member + body[own_at:]
    moved = body[:nested_at] + member + body[nested_at:]
    assert canonical_link(moved, b'"h1"', 1, head.hash) is None
    assert canonical_link(genuine, b'"h1"', 1, head.hash) is None  # two "chain":{ : left to the parsing check
    public = cp.load_public(public_file)
    for line, intact in ((genuine, True), (moved, False)):
        (chain_dir / f"records-{0:020d}.jsonl").write_bytes(_canonical(dumps(first)) + b"\n" + line + b"\n")
        full = verify(CHAIN, local_records(chain_dir), [], public)
        assert full.intact == intact
        assert verify_store(tmp_path / "store", CHAIN, public, None).as_dict() == full.as_dict()


# The hybrid path: chunk summaries committed in bulk, the full machinery only around chunks that are not intact.
# A small window and small chunks make every hand-over happen many times in a 400-record chain.
WINDOW = 20


def _move(t: LocalTamper, seq: int, after: int) -> None:
    doc = t.doc(seq)
    t.docs.remove(doc)
    t.insert_after(after, doc)


def _copy_to(t: LocalTamper, seq: int, after: int) -> None:
    t.insert_after(after, dict(t.doc(seq)))


def _modify_at(t: LocalTamper, seq: int) -> None:
    t.replace(seq, dict(t.doc(seq), message="nothing to see here"))


HYBRID_CASES: dict[str, Callable[[LocalTamper], None]] = {
    "untouched": lambda t: None,
    "modified first, middle, last": lambda t: [_modify_at(t, s) for s in (0, 150, 399)],
    "deleted in the middle": lambda t: t.delete(150),
    "deleted at the start": lambda t: t.delete(0, 1, 2),
    "tail truncated": lambda t: t.delete(*range(390, 400)),
    "forgery inserted": lambda t: t.insert_after(150, forge(t.doc(300), CHAIN, 151, t.doc(150)["chain"]["hash"])),
    "swapped pair": lambda t: t.swap(150, 151),
    "duplicated next to it": lambda t: t.duplicate(150),
    "moved within the window": lambda t: _move(t, 150, 160),
    "moved beyond the window": lambda t: _move(t, 150, 260),
    "copied beyond the window": lambda t: _copy_to(t, 150, 300),
    "copied just within the window": lambda t: _copy_to(t, 150, 150 + WINDOW - 3),
    "far-ahead seq inserted": lambda t: t.insert_after(150, forge(t.doc(300), CHAIN, 10**6, "0" * 64)),
    "two findings far apart": lambda t: (_modify_at(t, 60), t.delete(330)),
}


@pytest.mark.parametrize("case", list(HYBRID_CASES))
@pytest.mark.parametrize("workers", [1, 2])
def test_hybrid_path_gives_the_full_paths_report(tmp_path: Path, case: str, workers: int) -> None:
    chain = Chain(tmp_path, records=400)
    HYBRID_CASES[case](chain.tamper)
    lay = reader.layout(chain.store, CHAIN)
    full = verify(CHAIN, local_records(chain.dir), lay.notes, chain.public, window=WINDOW)
    assert full.intact == (case == "untouched")
    assert threading.active_count() == 1 or workers == 1
    with closing(reader.chunks(lay, checked_seqs(lay.notes, CHAIN, chain.public, None), workers, CHUNK)) as chunks:
        hybrid = verify_chunked(CHAIN, chunks, lay.notes, chain.public, WINDOW)
    assert hybrid.as_dict() == full.as_dict()
