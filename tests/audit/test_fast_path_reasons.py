"""The local store's fast and hybrid verify paths (audit/verify.py: ``scan_chunk``, ``checked_seqs``,
``verify_in_order``, ``verify_chunked``) on chains built in memory, each report compared with the full path's
(``verify.verify``) AND with the findings, counts and seqs this file states, so that a change that broke both
paths alike would still fail here.

tests/audit/test_verify_fast.py proves the same on chains the real shipper stored; these build the stored lines in
process (seal + RFC 8785, the shipper's form, as tests/audit/test_verify_reasons.py does) and cut them into small
chunks (a few records each) with a small reorder window, so that chunk boundaries, the hybrid path's regions and
its hand-back to bulk commits all happen within a few dozen records, cheaply enough for mutation testing
(docs/testing.md) to run them for every mutant. The tree walk (audit/treeverify.py) has its own file,
tests/audit/test_tree_walk_reasons.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint as cp
from audit import merkle
from audit.chain import GENESIS, Head
from audit.readers.localstore import records_of_lines
from audit.tiles import HEIGHT
from audit.verify import (
    ChunkSummary,
    Report,
    checked_seqs,
    scan_chunk,
    sealed_size,
    verify,
    verify_chunked,
    verify_in_order,
)
from tests.audit.test_forged_tail import forge
from tests.audit.test_verify_reasons import (  # the findings' details, as the full path's tests state them
    BROKEN,
    CHAIN,
    DUPLICATE,
    FAR,
    GONE,
    INSERTED,
    KEY,
    REORDERED,
    REWRITTEN,
    TRUNCATED,
    UNTRUSTED,
    _later_fork,
    detailed,
    fork,
    hash_of,
    head_note,
    lines,
    tree_note,
)

PUBLIC = KEY.public_key()
RECORDS = 24
SIZE = 5  # records per chunk: boundaries after seqs 4, 9, 14, 19

MODIFIED = "content does not match its hash"

Found = list[tuple[str, int | None, str]]


def cut(raw: Sequence[bytes], size: int) -> list[list[bytes]]:
    return [list(raw[i:i + size]) for i in range(0, len(raw), size)]


def full(raw: list[bytes], notes: Sequence[str] = (), trusted: cp.Checkpoint | None = None,
         window: int = 4096) -> Report:
    """The full path as ``tee-audit verify`` runs it on a store: lines below the sealed size may take the shortcut."""
    sealed = max(sealed_size(CHAIN, notes, PUBLIC), trusted.size if trusted else 0)
    return verify(CHAIN, records_of_lines(raw, CHAIN, sealed), notes, PUBLIC, trusted, window=window)


# --- scan_chunk: one chunk's summary ----------------------------------------------------------------------------------

def test_intact_chunk_is_summarised_with_the_hashes_asked_for() -> None:
    raw = lines(12)
    summary = scan_chunk(raw[5:10], {0, 6, 9, 11}, CHAIN)
    assert summary == ChunkSummary(True, 5, 5, hash_of(raw[4]), 9, hash_of(raw[9]),
                                   {6: hash_of(raw[6]), 9: hash_of(raw[9])}, 5)
    assert (summary.leaves, summary.groups, summary.pieces) == (b"", b"", {})  # no tree asked for


def test_chunk_starting_the_chain_links_to_genesis() -> None:
    raw = lines(3)
    summary = scan_chunk(raw, {0}, CHAIN)
    assert (summary.ok, summary.first_seq, summary.first_prev, summary.last_seq, summary.marks) == (
        True, 0, GENESIS, 2, {0: hash_of(raw[0])})


@pytest.mark.parametrize(("damage", "at"), [
    ("modified", 2), ("modified", 0), ("not a record", 0), ("not a record", 3), ("deleted", 2), ("swapped", 1),
    ("other chain", 0), ("other chain", 2)])
def test_chunk_that_is_not_intact_is_declined_with_its_line_count(damage: str, at: int) -> None:
    raw = lines(5)
    if damage == "modified":
        raw[at] = raw[at].replace(b'"n":', b'"n":1', 1)
    elif damage == "not a record":
        raw[at] = b'{"message":"hello"}'
    elif damage == "deleted":
        del raw[at]
    elif damage == "swapped":
        raw[at], raw[at + 1] = raw[at + 1], raw[at]
    else:
        raw[at] = lines(at + 1, chain_id="h2")[at]
    summary = scan_chunk(raw, {0, 1, 2, 3, 4}, CHAIN, tree=(2, 4))
    assert (summary.ok, summary.lines, summary.leaves, summary.groups, summary.pieces) == (
        False, len(raw), b"", b"", {})


def test_chunk_of_another_chain_is_declined() -> None:
    assert not scan_chunk(lines(3), {0}, "h2").ok
    assert scan_chunk(lines(3, chain_id="h2"), {0}, "h2").ok


def test_empty_chunk_is_not_intact() -> None:
    summary = scan_chunk([], {0}, CHAIN)
    assert (summary.ok, summary.count, summary.lines) == (False, 0, 0)


@pytest.mark.parametrize(("first", "count", "sizes"), [(0, 3, (2, 3, 7)), (250, 20, (255, 256, 260, 300)),
                                                       (256, 300, (300, 512, 600)), (100, 5, ())])
def test_intact_chunk_asked_for_the_tree_carries_its_leaf_hashes(first: int, count: int,
                                                                 sizes: tuple[int, ...]) -> None:
    """The leaf hashes, tile roots and pieces ``TreeWalk.add_run`` takes instead of the lines (merkle.leaf_run)."""
    head = Head(CHAIN, first, "ab" * 32) if first else None
    raw = lines(count, start=head)
    summary = scan_chunk(raw, set(), CHAIN, tree=sizes)
    assert summary.ok and summary.count == count
    leaves, groups, pieces = merkle.leaf_run(first, raw, sizes, HEIGHT)
    assert (summary.leaves, summary.groups, summary.pieces) == (leaves, groups, pieces)
    assert summary.leaves == b"".join(merkle.leaf_hash(line) for line in raw)


# --- checked_seqs: which hashes the scan keeps ----------------------------------------------------------------------

def test_checked_seqs_are_the_signed_checkpoints_last_records_and_the_start() -> None:
    raw = lines(RECORDS)
    notes = [head_note(raw, 5), tree_note(raw, 12), cp.sign(Ed25519PrivateKey.generate(), CHAIN, 20, "ab" * 32),
             cp.sign(KEY, "h2", 22, "ab" * 32), "not a note"]
    assert checked_seqs(notes, CHAIN, PUBLIC, None) == frozenset({0, 4, 11})
    assert checked_seqs(notes, CHAIN, PUBLIC, cp.parse(head_note(raw, 8))) == frozenset({7, 4, 11})
    assert checked_seqs([], CHAIN, PUBLIC, None) == frozenset({0})


# --- verify_in_order: the fast path from a trusted checkpoint -------------------------------------------------------

def in_order(raw: list[bytes], notes: Sequence[str] = (), trusted: cp.Checkpoint | None = None,
             size: int = SIZE, wanted: frozenset[int] | None = None) -> Report | None:
    seqs = checked_seqs(notes, CHAIN, PUBLIC, trusted) if wanted is None else wanted
    return verify_in_order(CHAIN, [scan_chunk(part, seqs, CHAIN) for part in cut(raw, size)], notes, PUBLIC, trusted)


def _trusted_at(size: int) -> Callable[[list[bytes]], cp.Checkpoint]:
    return lambda raw: cp.parse(head_note(raw, size))


def _trusted_tree_at(size: int) -> Callable[[list[bytes]], cp.Checkpoint]:
    return lambda raw: cp.parse(tree_note(raw, size))


Notes = Callable[[list[bytes]], list[str]]
Trusted = Callable[[list[bytes]], cp.Checkpoint] | None

# name: (notes over RECORDS genuine records, trusted, records kept, findings, (records, last_seq, unsealed, checkpoints))
IN_ORDER: dict[str, tuple[Notes, Trusted, int, Found, tuple[int, int, int, int]]] = {
    "no checkpoints": (lambda raw: [], None, RECORDS, [], (24, 23, 24, 0)),
    "head checkpoints at a chunk's end, inside one, at the end": (
        lambda raw: [head_note(raw, 5), head_note(raw, 12), head_note(raw, 24)], None, RECORDS, [], (24, 23, 0, 3)),
    "tree checkpoint's head line": (lambda raw: [tree_note(raw, 10)], None, RECORDS, [], (24, 23, 14, 1)),
    "checkpoint of one record": (lambda raw: [head_note(raw, 1)], None, RECORDS, [], (24, 23, 23, 1)),
    "checkpoint rewritten at the last record": (
        lambda raw: [head_note(raw, 10), cp.sign(KEY, CHAIN, 24, "cd" * 32)], None, RECORDS,
        [("checkpoint-mismatch", 23, REWRITTEN)], (24, 23, 0, 2)),  # it still covers the records: not unsealed
    "checkpoint rewritten at a chunk's first record": (
        lambda raw: [cp.sign(KEY, CHAIN, 11, "cd" * 32)], None, RECORDS,
        [("checkpoint-mismatch", 10, REWRITTEN)], (24, 23, 13, 1)),
    "checkpoint rewritten at the first record": (
        lambda raw: [cp.sign(KEY, CHAIN, 1, "cd" * 32), head_note(raw, 7)], None, RECORDS,
        [("checkpoint-mismatch", 0, REWRITTEN)], (24, 23, 17, 2)),
    "two notes of one size, one rewritten": (
        lambda raw: [head_note(raw, 7), cp.sign_tree(KEY, CHAIN, 7, b"\x07" * 32, "cd" * 32)], None, RECORDS,
        [("checkpoint-mismatch", 6, REWRITTEN)], (24, 23, 17, 2)),
    "checkpoint signed by another key": (
        lambda raw: [cp.sign(Ed25519PrivateKey.generate(), CHAIN, 12, hash_of(raw[11]))], None, RECORDS,
        [("bad-signature", 11, "checkpoint of size 12 is not signed by the trusted key")], (24, 23, 24, 0)),
    "checkpoint of another chain": (
        lambda raw: [cp.sign(KEY, "h2", 12, hash_of(raw[11]))], None, RECORDS,
        [("checkpoint-mismatch", 11, "checkpoint of size 12 belongs to 'tee-audit/h2', not 'tee-audit/h1'")],
        (24, 23, 24, 0)),
    "sealed tail truncated": (
        lambda raw: [head_note(raw, 10), head_note(raw, 24)], None, 18,
        [("missing", seq, TRUNCATED) for seq in range(18, 24)], (18, 17, 8, 2)),
    "trusted checkpoint inside a chunk": (lambda raw: [], _trusted_at(12), RECORDS, [], (13, 23, 12, 0)),
    "trusted checkpoint at a chunk's end, later checkpoints": (
        lambda raw: [head_note(raw, 10), head_note(raw, 15), head_note(raw, 20)], _trusted_at(10), RECORDS, [],
        (15, 23, 4, 3)),
    "trusted tree checkpoint": (lambda raw: [], _trusted_tree_at(12), RECORDS, [], (13, 23, 12, 0)),
    "trusted checkpoint rewritten": (
        lambda raw: [], lambda raw: cp.parse(cp.sign(KEY, CHAIN, 12, "cd" * 32)), RECORDS,
        [("checkpoint-mismatch", 11, UNTRUSTED)], (13, 23, 12, 0)),
    "trusted checkpoint and a rewritten later one": (
        lambda raw: [cp.sign(KEY, CHAIN, 17, "cd" * 32)], _trusted_at(12), RECORDS,
        [("checkpoint-mismatch", 16, REWRITTEN)], (13, 23, 7, 1)),
    "checkpoint before the trusted one rewritten: not judged": (
        lambda raw: [cp.sign(KEY, CHAIN, 5, "cd" * 32)], _trusted_at(12), RECORDS, [], (13, 23, 12, 1)),
    "trusted checkpoint at the last stored record": (lambda raw: [], _trusted_at(12), 12, [], (1, 11, 0, 0)),
    "trusted checkpoint, sealed tail truncated": (
        lambda raw: [head_note(raw, 20)], _trusted_at(12), 16,
        [("missing", seq, TRUNCATED) for seq in range(16, 20)], (5, 15, 4, 1)),
}


@pytest.mark.parametrize("case", list(IN_ORDER))
def test_fast_path_reports_what_the_full_path_reports(case: str) -> None:
    notes_of, trusted_of, kept, findings, (records, last_seq, unsealed, checkpoints) = IN_ORDER[case]
    genuine = lines(RECORDS)
    notes, trusted = notes_of(genuine), trusted_of(genuine) if trusted_of else None
    raw = genuine[:kept]
    fast = in_order(raw, notes, trusted)
    assert fast is not None, "intact and in order: the fast path judges this chain itself"
    assert detailed(fast) == findings
    assert (fast.records, fast.last_seq, fast.unsealed_tail, fast.checkpoints) == (records, last_seq, unsealed,
                                                                                   checkpoints)
    assert fast.as_dict() == full(raw, notes, trusted).as_dict()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 24, 100])
def test_fast_path_does_not_depend_on_the_chunk_size(size: int) -> None:
    raw = lines(RECORDS)
    notes = [head_note(raw, 3), head_note(raw, 8), cp.sign(KEY, CHAIN, 21, "cd" * 32)]
    fast = in_order(raw, notes, cp.parse(head_note(raw, 3)), size=size)
    assert fast is not None and detailed(fast) == [("checkpoint-mismatch", 20, REWRITTEN)]
    assert (fast.records, fast.unsealed_tail) == (22, 3)


def _relinked_from(seq: int) -> list[bytes]:
    """Records from ``seq`` on re-sealed onto another predecessor: every chunk is intact on its own."""
    raw = lines(RECORDS)
    return raw[:seq] + lines(RECORDS - seq, start=Head(CHAIN, seq, "cd" * 32))


def _without(*seqs: int) -> Callable[[], list[bytes]]:
    return lambda: [line for i, line in enumerate(lines(RECORDS)) if i not in seqs]


def _modified(seq: int) -> list[bytes]:
    raw = lines(RECORDS)
    raw[seq] = raw[seq].replace(b'"n":', b'"n":1', 1)
    return raw


# name: (stored lines, trusted size or 0, what the full path finds)
DECLINED: dict[str, tuple[Callable[[], list[bytes]], int, Found]] = {
    "record modified": (lambda: _modified(7), 0, [("modified", 7, MODIFIED)]),
    "chunk's first record gone": (_without(10), 0, [("missing", 10, GONE)]),
    "chunk relinked at its first record": (lambda: _relinked_from(10), 0, [("broken-link", 10, BROKEN)]),
    "chunk relinked at its first record, after a trusted start": (
        lambda: _relinked_from(15), 12, [("broken-link", 15, BROKEN)]),
    "first record not linked to genesis": (lambda: lines(RECORDS, start=Head(CHAIN, 0, "cd" * 32)), 0,
                                           [("broken-link", 0, BROKEN)]),
    "records before the first stored one gone": (_without(0, 1, 2), 0, [("missing", s, GONE) for s in (0, 1, 2)]),
    "the trusted checkpoint's record gone": (lambda: lines(RECORDS)[12:], 12, [("missing", 11, GONE)]),
    "no records after a trusted checkpoint": (lambda: lines(RECORDS)[:8], 12, [("missing", 11, TRUNCATED)]),
    "no records at all": (list, 0, []),
}


@pytest.mark.parametrize("case", list(DECLINED))
def test_fast_path_declines_what_only_the_full_path_can_judge(case: str) -> None:
    build, trusted_size, findings = DECLINED[case]
    raw = build()
    trusted = cp.parse(head_note(lines(RECORDS), trusted_size)) if trusted_size else None
    assert in_order(raw, (), trusted) is None
    assert detailed(full(raw, (), trusted)) == findings


def test_fast_path_declines_a_checkpoint_seq_the_scan_was_not_asked_for() -> None:
    raw = lines(RECORDS)
    notes = [head_note(raw, 12)]
    assert in_order(raw, notes, wanted=frozenset({0})) is None  # seq 11 unknown: its checkpoint cannot be judged
    assert in_order(raw, notes, wanted=frozenset({11})) is None  # the start (seq 0) unknown
    assert in_order(raw, notes, wanted=frozenset({0, 11})) is not None


def test_fast_path_declines_a_chain_whose_first_record_is_not_the_start() -> None:
    """Chunks handed over out of order: each intact, but the second does not continue the first."""
    raw = lines(RECORDS)
    parts = cut(raw, SIZE)
    parts[1], parts[2] = parts[2], parts[1]
    summaries = [scan_chunk(part, {0}, CHAIN) for part in parts]
    assert all(s.ok for s in summaries)
    assert verify_in_order(CHAIN, summaries, [], PUBLIC) is None
    parts[1], parts[2] = parts[2], parts[1]
    assert verify_in_order(CHAIN, [scan_chunk(part, {0}, CHAIN) for part in parts], [], PUBLIC) is not None


def run(first: int, last: int, prev: str) -> ChunkSummary:
    """A summary as a worker sends it, for records ``first``..``last`` (hashes made up, links consistent)."""
    return ChunkSummary(True, last - first + 1, first, prev, last, f"{last + 1:064x}", {0: f"{1:064x}"}, last - first + 1)


@pytest.mark.parametrize(("progress", "expected"), [(True, "verified 300000 records (seq 299999)\n"), (False, ""),
                                                    (None, "")])
def test_fast_path_progress_is_one_line_per_250000_records(capsys: pytest.CaptureFixture[str], progress: bool | None,
                                                             expected: str) -> None:
    chunks = [run(0, 199_998, GENESIS), run(199_999, 249_998, f"{199_999:064x}"),
              run(249_999, 299_999, f"{249_999:064x}")]
    kwargs = {} if progress is None else {"progress": progress}
    report = verify_in_order(CHAIN, chunks, [], PUBLIC, **kwargs)
    assert report is not None and (report.intact, report.records) == (True, 300_000)
    assert capsys.readouterr() == ("", expected)


def test_fast_path_progress_line_counts_records_not_chunks(capsys: pytest.CaptureFixture[str]) -> None:
    chunks = [run(0, 249_999, GENESIS), run(250_000, 250_001, f"{250_000:064x}")]
    report = verify_in_order(CHAIN, chunks, [], PUBLIC, progress=True)
    assert report is not None and report.records == 250_002
    assert capsys.readouterr() == ("", "verified 250000 records (seq 249999)\n")


# --- verify_chunked: the hybrid path --------------------------------------------------------------------------------

def sized(raw: list[bytes], sizes: Sequence[int], window: int, notes: Sequence[str] = ()) -> tuple[Report, list[int]]:
    """``verify_chunked`` over chunks of the given sizes, as the store's reader hands them over (each with a way to
    read its lines again): the report and the chunks read again."""
    parts, at = [], 0
    for size in sizes:
        parts.append(raw[at:at + size])
        at += size
    assert at == len(raw)
    wanted = checked_seqs(notes, CHAIN, PUBLIC, None)
    read_again: list[int] = []

    def reread(index: int) -> Callable[[], list[bytes]]:
        def read() -> list[bytes]:
            read_again.append(index)
            return list(parts[index])
        return read

    chunks = [(scan_chunk(part, wanted, CHAIN), reread(i)) for i, part in enumerate(parts)]
    return verify_chunked(CHAIN, chunks, notes, PUBLIC, window=window), read_again


def hybrid(raw: list[bytes], notes: Sequence[str] = (), size: int = 3, window: int = 2) -> tuple[Report, list[int]]:
    """Chunks of ``size`` records (the last one shorter)."""
    return sized(raw, [len(part) for part in cut(raw, size)], window, notes)


def _swap(a: int, b: int) -> Callable[[list[bytes]], None]:
    def change(raw: list[bytes]) -> None:
        raw[a], raw[b] = raw[b], raw[a]
    return change


def _insert(at: int, line: Callable[[list[bytes]], bytes]) -> Callable[[list[bytes]], None]:
    def change(raw: list[bytes]) -> None:
        raw.insert(at, line(raw))
    return change


def _delete(*positions: int) -> Callable[[list[bytes]], None]:
    def change(raw: list[bytes]) -> None:
        for at in sorted(positions, reverse=True):
            del raw[at]
    return change


def _move(frm: int, to: int) -> Callable[[list[bytes]], None]:
    def change(raw: list[bytes]) -> None:
        raw.insert(to, raw.pop(frm))
    return change


def _relink(at: int) -> Callable[[list[bytes]], None]:
    def change(raw: list[bytes]) -> None:
        raw[at:] = lines(len(raw) - at, start=Head(CHAIN, at, "cd" * 32))
    return change


def _skip(at: int, count: int) -> Callable[[list[bytes]], None]:
    """Records from ``at`` on re-sealed ``count`` seqs later, the first still linked to record ``at - 1``: every
    chunk intact, every link right, seqs ``at``.. ``at + count - 1`` never stored."""
    def change(raw: list[bytes]) -> None:
        raw[at:] = lines(len(raw) - at, start=Head(CHAIN, at + count, hash_of(raw[at - 1])))
    return change


def _reseal(at: int) -> Callable[[list[bytes]], None]:
    """Record ``at`` alone re-sealed onto another predecessor: it and its successor break the chain."""
    def change(raw: list[bytes]) -> None:
        raw[at] = lines(1, start=Head(CHAIN, at, "cd" * 32))[0]
    return change


def _stored(order: Sequence[int], resealed: int) -> Callable[[list[bytes]], None]:
    """The records stored in ``order`` (seqs), record ``resealed`` re-sealed onto another predecessor."""
    def change(raw: list[bytes]) -> None:
        _reseal(resealed)(raw)
        raw[:] = [raw[seq] for seq in order]
    return change


def _modify(at: int) -> Callable[[list[bytes]], None]:
    def change(raw: list[bytes]) -> None:
        raw[at] = raw[at].replace(b'"n":', b'"n":1', 1)
    return change


def _both(*changes: Callable[[list[bytes]], None]) -> Callable[[list[bytes]], None]:
    def change(raw: list[bytes]) -> None:
        for one in changes:
            one(raw)
    return change


HYBRID_RECORDS = 30
# name: (change to HYBRID_RECORDS genuine records, findings with chunks of 3 and a window of 2)
HYBRID: dict[str, tuple[Callable[[list[bytes]], None], Found]] = {
    "intact": (lambda raw: None, []),
    "swapped inside a chunk": (_swap(13, 14), [("reordered", 13, REORDERED), ("reordered", 14, REORDERED)]),
    "swapped across a chunk boundary": (_swap(11, 12), [("reordered", 11, REORDERED), ("reordered", 12, REORDERED)]),
    "swapped in the first chunk": (_swap(0, 1), [("reordered", 0, REORDERED), ("reordered", 1, REORDERED)]),
    "swapped last pair": (_swap(28, 29), [("reordered", 28, REORDERED), ("reordered", 29, REORDERED)]),
    "deleted at a chunk's start": (_delete(12), [("missing", 12, GONE)]),
    "deleted at a chunk's end": (_delete(14), [("missing", 14, GONE)]),
    "two deleted far apart": (_delete(4, 22), [("missing", 4, GONE), ("missing", 22, GONE)]),
    "two deleted close": (_delete(10, 13), [("missing", 10, GONE), ("missing", 13, GONE)]),
    "last record deleted": (_delete(29), []),
    "modified": (_modify(16), [("modified", 16, MODIFIED)]),
    "modified in two neighbouring chunks": (_both(_modify(8), _modify(9)), [("modified", 8, MODIFIED),
                                                                             ("modified", 9, MODIFIED)]),
    "duplicated at a chunk's end": (_insert(15, lambda raw: raw[14]), [("duplicate", 14, DUPLICATE)]),
    "duplicated far later": (_insert(20, lambda raw: raw[6]), [("reordered", 6, FAR)]),  # beyond the window
    "fork before the genuine record": (_insert(10, lambda raw: _later_fork(10, raw)), [("inserted", 10, INSERTED)]),
    "fork after the genuine record": (_insert(11, lambda raw: fork(10, raw)), [("inserted", 10, INSERTED)]),
    "fork of the last record": (_insert(30, lambda raw: _later_fork(29, raw)), [("inserted", 29, INSERTED)]),
    "moved far later": (_move(5, 20), [("missing", 5, GONE), ("reordered", 5, FAR)]),
    "moved far earlier": (_move(22, 4), [("reordered", 22, REORDERED)]),
    "relinked from a chunk's start": (_relink(12), [("broken-link", 12, BROKEN)]),
    "relinked inside a chunk": (_relink(13), [("broken-link", 13, BROKEN)]),
    "first record not linked to genesis": (_relink(0), [("broken-link", 0, BROKEN)]),
    "first records gone": (_delete(0, 1, 2), [("missing", 0, GONE), ("missing", 1, GONE), ("missing", 2, GONE)]),
    "seqs skipped at a chunk's start, link kept": (_skip(12, 3), [("missing", seq, GONE) for seq in (12, 13, 14)]),
    "gap at a chunk's start after a region": (_both(_modify(10), _delete(15)), [("modified", 10, MODIFIED),
                                                                                 ("missing", 15, GONE)]),
    "chunk after a region relinked": (_both(_modify(10), _relink(12)), [("modified", 10, MODIFIED),
                                                                         ("broken-link", 12, BROKEN)]),
    "line that is not a record": (_insert(7, lambda raw: b'{"message":"hello"}'), [
        ("inserted", None, "stored entry #7 is not a chained record ('chain')")]),
    "two lines that are not records": (
        _both(_insert(7, lambda raw: b'{"message":"hello"}'), _insert(20, lambda raw: b'{"a":1}')), [
            ("inserted", None, "stored entry #20 is not a chained record ('chain')"),  # by detail: text order
            ("inserted", None, "stored entry #7 is not a chained record ('chain')")]),
    "record of another chain": (_insert(16, lambda raw: lines(4, chain_id="h2")[3]), [
        ("inserted", 3, "stored entry #16 is a record of chain 'h2'")]),
}


@pytest.mark.parametrize("case", list(HYBRID))
def test_hybrid_path_reports_what_the_full_path_reports(case: str) -> None:
    change, findings = HYBRID[case]
    raw = lines(HYBRID_RECORDS)
    change(raw)
    report, _ = hybrid(raw)
    assert detailed(report) == findings
    assert report.as_dict() == full(raw, window=2).as_dict()


@pytest.mark.parametrize("case", list(HYBRID))
@pytest.mark.parametrize(("size", "window"), [(2, 1), (2, 3), (4, 2), (5, 1), (7, 3)])
def test_hybrid_path_does_not_depend_on_chunk_size_or_window(case: str, size: int, window: int) -> None:
    change, _ = HYBRID[case]
    raw = lines(HYBRID_RECORDS)
    change(raw)
    report, _ = hybrid(raw, size=size, window=window)
    assert report.as_dict() == full(raw, window=window).as_dict()


def test_hybrid_path_counts_every_record_of_an_intact_chain_and_reads_none_again() -> None:
    raw = lines(HYBRID_RECORDS)
    report, read_again = hybrid(raw, [head_note(raw, 9), head_note(raw, 20)])
    assert (report.intact, report.records, report.last_seq, report.unsealed_tail, report.checkpoints) == (
        True, 30, 29, 10, 2)
    assert read_again == []


@pytest.mark.parametrize(("change", "expected"), [
    (_modify(16), [3, 4, 5]),  # the chunk of seq 16, after the two still held back (window + 2 records)
    (_swap(0, 1), [0]),  # nothing held before it; the chunks after it are handed back to bulk commits
    (_delete(28), [7, 8, 9]),  # the last chunk, after those held back
])
def test_hybrid_path_reads_again_only_the_chunks_around_a_bad_one(change: Callable[[list[bytes]], None],
                                                                  expected: list[int]) -> None:
    raw = lines(HYBRID_RECORDS)
    change(raw)
    assert hybrid(raw)[1] == expected


# name: (records, change, chunk sizes, window, chunks read again, findings). A chunk is committed in bulk once
# window + 2 records of intact, continuing chunks follow it; a chunk of one record, or one that is not intact, is
# read by the full machinery with every chunk still held before it; the machinery hands back to the first held
# chunk its last record links to (``_Region.hand_back``).
READS: dict[str, tuple[int, Callable[[list[bytes]], None], list[int], int, list[int], Found]] = {
    "intact, chunks of two": (12, lambda raw: None, [2] * 6, 1, [], []),
    "chunk followed by window + 2 records is committed": (7, _modify(5), [2, 3, 2], 1, [1, 2],
                                                           [("modified", 5, MODIFIED)]),
    "chunk followed by fewer is read again": (6, lambda raw: None, [3, 2, 1], 1, [0, 1, 2], []),
    "chunk after a region followed by fewer is read again": (9, _modify(0), [2, 5, 2], 1, [0, 1, 2],
                                                             [("modified", 0, MODIFIED)]),
    "region hands back to the first chunk after it": (9, lambda raw: None, [1, 2, 6], 3, [0], []),
    "region reads the chunk its last record does not link to, and hands back to the next": (
        12, _reseal(2), [3, 2, 2, 5], 2, [0, 1], [("broken-link", 2, BROKEN), ("broken-link", 3, BROKEN)]),
    # record 3 stored after 20, 8 gone, 13 re-sealed: the count of records held stays right after a failed hand-back
    "chunks read after a failed hand-back leave the held count right": (
        29, _stored([0, 1, 2, 4, 5, 6, 7, *range(9, 21), 3, *range(21, 29)], 13), [3, 2, 2, 5, 2, 4, 5, 5], 1,
        list(range(8)), [("missing", 3, GONE), ("reordered", 3, FAR), ("missing", 8, GONE), ("broken-link", 13, BROKEN),
               ("broken-link", 14, BROKEN)]),
}


@pytest.mark.parametrize("case", list(READS))
def test_hybrid_path_reads_again_only_what_the_full_machinery_needs(case: str) -> None:
    count, change, sizes, window, expected, findings = READS[case]
    raw = lines(count)
    change(raw)
    report, read_again = sized(raw, sizes, window)
    assert read_again == expected
    assert detailed(report) == findings
    assert report.as_dict() == full(raw, window=window).as_dict()


MIXED = [[3, 2, 2, 5, 2, 4, 5, 5, 2], [1, 5, 4, 1, 3, 5, 2, 3, 5, 1]]


@pytest.mark.parametrize("case", list(HYBRID))
@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("sizes", MIXED)
def test_hybrid_path_with_chunks_of_mixed_sizes(case: str, window: int, sizes: list[int]) -> None:
    change, _ = HYBRID[case]
    raw = lines(HYBRID_RECORDS)
    change(raw)
    cut_sizes, left = [], len(raw)
    for size in sizes * 2:
        if left > 0:
            cut_sizes.append(min(size, left))
            left -= cut_sizes[-1]
    report, _ = sized(raw, cut_sizes, window)
    assert report.as_dict() == full(raw, window=window).as_dict()


# name: (checkpoints over HYBRID_RECORDS genuine records, change, findings, (records, unsealed, checkpoints))
CHECKPOINTED: dict[str, tuple[Notes, Callable[[list[bytes]], None], Found, tuple[int, int, int]]] = {
    "checkpoints held against committed runs": (
        lambda raw: [head_note(raw, 3), head_note(raw, 8), head_note(raw, 30)], lambda raw: None, [], (30, 0, 3)),
    "rewritten checkpoint in a committed run": (
        lambda raw: [cp.sign(KEY, CHAIN, 8, "cd" * 32), head_note(raw, 20)], lambda raw: None,
        [("checkpoint-mismatch", 7, REWRITTEN)], (30, 10, 2)),
    "rewritten checkpoint in a region": (
        lambda raw: [cp.sign(KEY, CHAIN, 17, "cd" * 32)], _modify(15),
        [("modified", 15, MODIFIED), ("checkpoint-mismatch", 16, REWRITTEN)], (30, 13, 1)),
    "rewritten checkpoint in the first run after a region": (
        lambda raw: [cp.sign(KEY, CHAIN, 26, "cd" * 32)], _modify(10),
        [("modified", 10, MODIFIED), ("checkpoint-mismatch", 25, REWRITTEN)], (30, 4, 1)),
    "sealed tail truncated": (
        lambda raw: [head_note(raw, 30)], _delete(26, 27, 28, 29),
        [("missing", seq, TRUNCATED) for seq in (26, 27, 28, 29)], (26, 26, 1)),  # the checkpoint's record gone
    "record past the last checkpoint relinked": (
        lambda raw: [head_note(raw, 20)], _relink(25), [("broken-link", 25, BROKEN)], (30, 10, 1)),
}


@pytest.mark.parametrize("case", list(CHECKPOINTED))
@pytest.mark.parametrize(("size", "window"), [(3, 2), (2, 1), (5, 3)])
def test_hybrid_path_holds_checkpoints_against_the_records(case: str, size: int, window: int) -> None:
    notes_of, change, findings, (records, unsealed, checkpoints) = CHECKPOINTED[case]
    raw = lines(HYBRID_RECORDS)
    notes = notes_of(raw)
    change(raw)
    report, _ = hybrid(raw, notes, size, window)
    assert detailed(report) == findings
    assert (report.records, report.unsealed_tail, report.checkpoints) == (records, unsealed, checkpoints)
    assert report.as_dict() == full(raw, notes, window=window).as_dict()


def test_hybrid_path_parses_a_forged_line_past_the_last_checkpoint_in_full() -> None:
    """A region's lines past the sealed size take no shortcut (``parse_record``'s ``sealed``): a last line framed
    like a record, its hash over the cut chosen by its writer (tests/audit/test_forged_tail.py), is read in full
    and found not to be one. (An intact chunk holding it is committed: verify_cli re-reads the unsealed lines.)"""
    raw = lines(HYBRID_RECORDS)
    notes = [head_note(raw, 12)]
    raw[29] = forge(b'{"x":{', Head(CHAIN, 29, hash_of(raw[28])), b"}}")
    raw[27] = raw[27].replace(b'"n":', b'"n":1', 1)  # the last chunk is a region
    report, _ = hybrid(raw, notes)
    forged = "stored entry #29 is not a chained record ('chain')"
    assert detailed(report) == [("modified", 27, MODIFIED), ("inserted", None, forged)]
    assert (report.records, report.last_seq) == (29, 28)
    assert report.as_dict() == full(raw, notes, window=2).as_dict()


def test_findings_of_one_seq_and_kind_are_listed_in_one_order_on_every_path() -> None:
    """A record of another chain is a finding of the line (at its seq, the other chain's); a fork at the same seq
    is the walker's. The full path adds the line's after every record, a region at the line, and the walker's come
    a window's size after their records: ordered by seq and kind alone, the report depended on the path and the
    window. Sorted by detail too, it is one."""
    raw = lines(HYBRID_RECORDS)
    raw.insert(11, fork(10, raw))
    raw.insert(3, lines(11, chain_id="h2")[10])
    expected = [("inserted", 10, INSERTED), ("inserted", 10, "stored entry #3 is a record of chain 'h2'")]
    reports = [full(raw), full(raw, window=2), full(raw, window=5), hybrid(raw)[0], hybrid(raw, size=2, window=1)[0]]
    assert [detailed(r) for r in reports] == [expected] * len(reports)


def test_hybrid_path_prints_no_progress(capsys: pytest.CaptureFixture[str]) -> None:
    """Records 0..249,997 committed in bulk (a summary as a worker sends it), then a region commits the 250,000th
    record one at a time: the walker it drives was made without progress lines (``verify_store`` gives progress
    to the full path and the fast path only)."""
    before = "ab" * 32
    intact = lines(5, start=Head(CHAIN, 249_998, before))
    bad = lines(4, start=Head(CHAIN, 250_003, hash_of(intact[-1])))
    bad[1] = bad[1].replace(b'"n":', b'"n":1', 1)

    def never() -> list[bytes]:
        raise AssertionError("a chunk committed in bulk is never read again")

    chunks = [(ChunkSummary(True, 249_998, 0, GENESIS, 249_997, before, {0: "cd" * 32}, 249_998), never),
              (scan_chunk(intact, {0}, CHAIN), lambda: list(intact)), (scan_chunk(bad, {0}, CHAIN), lambda: list(bad))]
    report = verify_chunked(CHAIN, chunks, [], PUBLIC, window=2)
    assert (detailed(report), report.records, report.last_seq) == ([("modified", 250_004, MODIFIED)], 250_007,
                                                                    250_006)
    assert capsys.readouterr() == ("", "")


def test_hybrid_path_on_an_empty_store() -> None:
    report, read_again = hybrid([])
    assert (report.intact, report.records, report.last_seq, read_again) == (True, 0, -1, [])


@pytest.mark.parametrize(("sizes", "change", "findings"), [
    ([1, 1, 1, 6, 6, 6, 9], _swap(4, 5), [("reordered", 4, REORDERED), ("reordered", 5, REORDERED)]),
    ([3, 1, 3, 1, 3, 1, 18], _modify(9), [("modified", 9, MODIFIED)]),
    ([2, 2, 2, 2, 22], lambda raw: None, []),
    ([12, 1, 16], _delete(20), [("missing", 20, GONE)]),
])
def test_hybrid_path_with_chunks_of_one_record(sizes: list[int], change: Callable[[list[bytes]], None],
                                                findings: Found) -> None:
    """A chunk of one record is never held for a bulk commit (nothing in it proves a link): the full machinery
    reads it, and the chunks around it, as it would any chunk that is not intact."""
    raw = lines(HYBRID_RECORDS)
    change(raw)
    report, _ = sized(raw, sizes, window=2)
    assert detailed(report) == findings
    assert report.as_dict() == full(raw, window=2).as_dict()
