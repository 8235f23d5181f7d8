"""The streaming verifier's findings on chains built in memory: each tampering named by its kind, seq and detail.

tests/audit/test_verify_fast.py and test_tamper.py prove the same on chains the real shipper stored; these build the
stored lines in process (seal + RFC 8785, exactly the shipper's form) and feed ``audit.verify`` through its public
functions, so that mutation testing (docs/testing.md) can afford to run them for every mutant. Checkpoints are
judged by signature, origin and the head hash they vouch for (a head checkpoint's root, a tree checkpoint's
``tee-audit-head`` line); a tree checkpoint's Merkle root is audit/treeverify.py's to judge, so here it is filler.
Each forgery is built so that only the rule it targets decides: a fork's hash sorts after the genuine one's, a
forgery is stored before the record it competes with, a swapped record lands where no neighbour links it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint as cp
from audit.canonical import canonicalize
from audit.chain import GENESIS, Head, seal
from audit.readers.localstore import records_of_lines
from audit.verify import (
    MAX_LISTED_MISSING,
    Finding,
    Promise,
    Rec,
    Report,
    judge_tail,
    verify,
)

KEY = Ed25519PrivateKey.generate()
CHAIN = "h1"


def lines(count: int, chain_id: str = CHAIN, start: Head | None = None) -> list[bytes]:
    head, out = start or Head(chain_id), []
    for i in range(count):
        doc, head = seal({"@timestamp": "2026-01-01T00:00:00Z", "message": f"event {i}", "n": i}, head)
        out.append(canonicalize(doc))
    return out


def stored(raw: Iterable[bytes]) -> Iterator[Rec | Finding]:
    """What the local store reader yields: records in file order, misplacement flagged, then line findings; every
    line as if a signed checkpoint covered it, so that ``canonical_link``'s shortcut is taken wherever it applies
    (the lines past the last checkpoint, parsed in full: tests/audit/test_forged_unsealed.py)."""
    return records_of_lines(raw, CHAIN, sealed=1 << 62)


def report(raw: list[bytes], checkpoints: Iterable[str] = (), **kwargs) -> Report:
    return verify(CHAIN, stored(raw), checkpoints, KEY.public_key(), **kwargs)


def found(raw: list[bytes], **kwargs) -> list[tuple[str, int | None]]:
    return [(f.kind, f.seq) for f in report(raw, **kwargs).findings]


def test_intact_chain() -> None:
    r = report(lines(5))
    assert (r.intact, r.records, r.last_seq, r.findings, r.expired) == (True, 5, 4, [], 0)


def test_modified_content_is_modified_with_the_reason() -> None:
    raw = lines(5)
    raw[2] = raw[2].replace(b'"n":2', b'"n":7')
    r = report(raw)
    assert [(f.kind, f.seq, f.detail) for f in r.findings] == [("modified", 2, "content does not match its hash")]


def test_respelled_bytes_are_modified_with_the_reason() -> None:
    raw = lines(3)
    raw[1] = raw[1].replace(b'"n":1', b'"n":1.0')
    r = report(raw)
    assert [(f.kind, f.seq) for f in r.findings] == [("modified", 1)]
    assert r.findings[0].detail.startswith("stored bytes are not the record's RFC 8785 form")


def test_deleted_record_is_missing() -> None:
    raw = lines(6)
    del raw[3]
    assert found(raw) == [("missing", 3)]  # after a gap the successor's link cannot be judged


def test_long_gap_is_one_missing_finding() -> None:
    raw = lines(MAX_LISTED_MISSING + 5)
    del raw[1:MAX_LISTED_MISSING + 3]
    r = report(raw)
    assert [(f.kind, f.seq) for f in r.findings] == [("missing", 1)]
    assert r.findings[0].detail.endswith(f"seq 1..{MAX_LISTED_MISSING + 2} ({MAX_LISTED_MISSING + 2} records)")


def test_gap_just_short_of_the_limit_lists_each_seq() -> None:
    raw = lines(MAX_LISTED_MISSING + 2)
    del raw[1:MAX_LISTED_MISSING + 1]
    assert found(raw) == [("missing", seq) for seq in range(1, MAX_LISTED_MISSING + 1)]


def test_swapped_neighbours_are_reordered() -> None:
    raw = lines(6)
    raw[2], raw[3] = raw[3], raw[2]
    assert found(raw) == [("reordered", 2), ("reordered", 3)]


def test_record_stored_far_out_of_order_is_reordered() -> None:
    raw = lines(12)
    moved = raw.pop(1)
    raw.append(moved)
    assert found(raw, window=2) == [("missing", 1), ("reordered", 1)]


def test_duplicate_keeps_the_genuine_and_names_the_copy() -> None:
    raw = lines(5)
    raw.insert(3, raw[2])
    r = report(raw)
    assert [(f.kind, f.seq) for f in r.findings] == [("duplicate", 2)] and r.records == 5


def test_forged_record_between_two_genuine_ones_is_inserted() -> None:
    raw = lines(5)
    forged = lines(1, start=Head(CHAIN, 2, "ab" * 32))[0]  # seq 2, hash right, linked to nothing
    raw.insert(3, forged)
    kinds = found(raw)
    assert ("inserted", 2) in kinds and ("broken-link", 2) not in kinds


def test_line_of_another_chain_is_inserted() -> None:
    raw = lines(3)
    raw.insert(1, lines(1, chain_id="h2")[0])
    r = report(raw)
    assert [(f.kind, f.seq) for f in r.findings] == [("inserted", 0)]
    assert "is a record of chain 'h2'" in r.findings[0].detail


def test_line_that_is_not_a_record_is_inserted() -> None:
    raw = lines(3)
    raw.insert(1, b'{"message": "hello"}')
    r = report(raw)
    assert [(f.kind, f.seq) for f in r.findings] == [("inserted", None)]
    assert r.findings[0].detail.startswith("stored entry #1 is not a chained record")


def test_relinked_record_is_a_broken_link() -> None:
    """A record re-sealed onto another predecessor hash: its own hash is right, its link is not."""
    raw = lines(4)
    raw[2] = lines(1, start=Head(CHAIN, 2, "cd" * 32))[0]
    raw[3] = lines(1, start=Head(CHAIN, 3, "ef" * 32))[0]
    assert found(raw) == [("broken-link", 2), ("broken-link", 3)]


def test_first_record_must_link_to_genesis() -> None:
    raw = lines(2, start=Head(CHAIN, 0, "ab" * 32))
    assert found(raw) == [("broken-link", 0)]
    assert lines(1)[0].count(GENESIS.encode()) == 1


# --- checkpoints: signatures and origins (their roots are judged by the shipper-built tests) ---------------------

def note(size: int, key: Ed25519PrivateKey = KEY, chain_id: str = CHAIN) -> str:
    return cp.sign(key, chain_id, size, "ab" * 32)


def test_checkpoint_by_another_key_is_a_bad_signature() -> None:
    r = report(lines(3), [note(3, Ed25519PrivateKey.generate())])
    assert [(f.kind, f.seq, f.detail) for f in r.findings] == [
        ("bad-signature", 2, "checkpoint of size 3 is not signed by the trusted key")]
    assert r.checkpoints == 0


def test_unreadable_checkpoint_is_a_bad_signature() -> None:
    r = report(lines(3), ["not a note"])
    assert [(f.kind, f.seq) for f in r.findings] == [("bad-signature", None)]
    assert r.findings[0].detail.startswith("unreadable checkpoint: ")


def test_checkpoint_of_another_chain_is_a_mismatch() -> None:
    r = report(lines(3), [note(3, chain_id="h2")])
    assert [(f.kind, f.seq, f.detail) for f in r.findings] == [
        ("checkpoint-mismatch", 2, "checkpoint of size 3 belongs to 'tee-audit/h2', not 'tee-audit/h1'")]


def test_empty_chain_checkpoint_counts_nothing() -> None:
    r = report(lines(2), [note(0)])
    assert (r.findings, r.checkpoints, r.unsealed_tail) == ([], 0, 2)


# --- the checkpoint promise -----------------------------------------------------------------------------------------

def tail_report(records: int) -> Report:
    r = Report(CHAIN, records=records, last_seq=records - 1, unsealed_tail=records)
    return r


def test_tail_longer_than_promised_is_unsealed() -> None:
    r = tail_report(11)
    judge_tail(r, Promise(every_records=10, every_seconds=0), 0.0, [])
    expected = ("records 0..10 are covered by no checkpoint: 11 records, but the shipper signs a checkpoint at "
                "least every 10")
    assert [(f.kind, f.seq, f.detail) for f in r.findings] == [("unsealed", 0, expected)]


def test_tail_as_long_as_promised_is_fine() -> None:
    r = tail_report(10)
    judge_tail(r, Promise(every_records=10, every_seconds=0), 0.0, [])
    assert r.findings == []


@pytest.mark.parametrize(("stamp", "stale"), [
    ("2026-01-01T00:02:00Z", False),  # exactly 60 s + 60 s grace old
    ("2026-01-01T00:01:59Z", True),
    ("2026-01-01T00:05:00Z", False),  # 60 s in the future: within the grace
    ("2026-01-01T00:05:01Z", True),
    ("2026-01-01T00:04:00", False),  # no zone: UTC
    ("yesterday", True),
    (None, True),
])
def test_tail_older_than_promised_is_unsealed(stamp, stale: bool) -> None:
    now = 1767225840.0  # 2026-01-01T00:04:00Z
    r = tail_report(1)
    judge_tail(r, Promise(every_records=10, every_seconds=60, grace_seconds=60), now, [(0, stamp)])
    assert [f.kind for f in r.findings] == (["unsealed"] if stale else [])
    if stale:
        assert r.findings[0].detail == ("records 0..0 are covered by no checkpoint: 1 of them timestamped more than "
                                        "120 s ago (or in the future), but the shipper signs a checkpoint at least "
                                        "every 60 s")


def test_no_promise_or_no_tail_is_never_a_finding() -> None:
    r = tail_report(100)
    judge_tail(r, None, 0.0, [])
    judge_tail(r, Promise(every_records=0, every_seconds=0), 0.0, [])
    empty = tail_report(0)
    judge_tail(empty, Promise(every_records=1), 0.0, [(0, None)])
    assert r.findings == [] and empty.findings == []


# --- retention --------------------------------------------------------------------------------------------------

def test_records_below_the_retention_floor_are_expired_not_missing() -> None:
    raw = lines(8)[3:]
    r = report(raw, floor=3)
    assert (r.findings, r.expired, r.records) == ([], 3, 5)


def test_report_as_dict_names_every_field() -> None:
    raw = lines(3)
    raw[1] = raw[1].replace(b'"n":1', b'"n":2')
    assert report(raw).as_dict() == {
        "intact": False, "chain": CHAIN, "records": 3, "checkpoints": 0, "unsealed_tail": 3, "expired": 0,
        "last_seq": 2, "findings": [{"kind": "modified", "seq": 1, "detail": "content does not match its hash"}],
        "findings_not_listed": 0, "failure_store": [], "witnessed_size": None}  # None: no witness policy given


# --- the trusted checkpoint an auditor starts from ------------------------------------------------------------

def test_trusted_checkpoint_must_be_readable_and_signed_by_the_key() -> None:
    from audit.verify import VerifyError, trusted_checkpoint
    assert trusted_checkpoint(note(3), KEY.public_key()).size == 3
    with pytest.raises(VerifyError, match="^trusted checkpoint: not a signed note"):
        trusted_checkpoint("garbage", KEY.public_key())
    with pytest.raises(VerifyError, match="^trusted checkpoint is not signed by the given public key$"):
        trusted_checkpoint(note(3, Ed25519PrivateKey.generate()), KEY.public_key())


@pytest.mark.parametrize(("text", "message"), [
    (lambda: note(3, chain_id="h2"), "the trusted checkpoint is of 'tee-audit/h2', not of chain 'h1'"),
    (lambda: note(0), "the trusted checkpoint is of an empty chain"),
])
def test_trusted_checkpoint_of_another_chain_or_of_nothing_is_refused(text, message: str) -> None:
    from audit.verify import VerifyError
    with pytest.raises(VerifyError) as err:
        report(lines(3), trusted=cp.parse(text()))
    assert str(err.value) == message


def test_non_ascii_in_the_link_fields_is_modified_not_a_crash() -> None:
    """peek_link reads seq and prev_hash off the bytes without parsing; text that is not ASCII there must fall
    through to the full parse, which reports the record modified."""
    raw = lines(3)
    prev = raw[1].split(b'"prev_hash":"')[1][:64]
    raw[1] = raw[1].replace(prev, "\u00e9".encode() + prev[2:], 1)
    assert found(raw) == [("broken-link", 1), ("modified", 1)]


def test_seq_that_is_not_a_number_is_not_a_record_not_a_crash() -> None:
    raw = lines(3)
    raw[1] = raw[1].replace(b'"seq":1}', b'"seq":"1"}')
    r = report(raw)
    assert sorted((f.kind, f.seq) for f in r.findings) == [("inserted", None), ("missing", 1)]
    assert any("chain fields have the wrong types" in f.detail for f in r.findings)


# --- every finding as an auditor reads it: kind, seq and detail ------------------------------------------------------

def hash_of(line: bytes) -> str:
    return json.loads(line)["chain"]["hash"]


def head_note(raw: list[bytes], size: int, key: Ed25519PrivateKey = KEY) -> str:
    """The head checkpoint (v1) a shipper signs after ``size`` records: the hash of record ``size - 1``."""
    return cp.sign(key, CHAIN, size, hash_of(raw[size - 1]))


def tree_note(raw: list[bytes], size: int, head: bool = True) -> str:
    """A tree checkpoint; its tree root is not judged here (audit/treeverify.py), its head line is. Without
    ``head`` the extension line is malformed, so the note vouches for no head hash."""
    return cp.sign_tree(KEY, CHAIN, size, b"\x07" * 32, hash_of(raw[size - 1]) if head else "zz" * 32)


def fork(at: int, raw: list[bytes], tag: str = "forged") -> bytes:
    """A record sealed at seq ``at`` onto the same predecessor as the genuine one: its hash and link are right."""
    prev = hash_of(raw[at - 1]) if at else GENESIS
    doc, _ = seal({"@timestamp": "2026-01-01T00:00:00Z", "message": tag, "n": at}, Head(CHAIN, at, prev))
    return canonicalize(doc)


def detailed(r: Report) -> list[tuple[str, int | None, str]]:
    return [(f.kind, f.seq, f.detail) for f in r.findings]


REORDERED = "record is stored out of sequence order"
FAR = "record stored far out of sequence order"
INSERTED = "a record with this seq that is not part of the chain"
DUPLICATE = "the same record is stored more than once"
BROKEN = "prev_hash does not match the previous record's hash"
GONE = "no record with this seq"
TRUNCATED = "covered by a signed checkpoint but gone (tail truncated)"
REWRITTEN = "signed checkpoint disagrees with the records (history rewritten)"
UNTRUSTED = "record disagrees with the trusted checkpoint"


def _swapped() -> list[bytes]:
    raw = lines(6)
    raw[2], raw[3] = raw[3], raw[2]
    return raw


def _far() -> list[bytes]:
    raw = lines(12)
    raw.append(raw.pop(1))
    return raw


def _relinked() -> list[bytes]:
    raw = lines(4)
    raw[3] = lines(1, start=Head(CHAIN, 3, "cd" * 32))[0]
    return raw


def _later_fork(at: int, raw: list[bytes]) -> bytes:
    """A fork of record ``at`` whose (hash, computed hash) key sorts after the genuine one's, so that neither the
    storage order nor the larger key can stand in for the rule that picks the genuine record."""
    return next(f for tag in map(str, range(100)) if hash_of(f := fork(at, raw, tag)) > hash_of(raw[at]))


def _fork_before_genuine() -> list[bytes]:
    """The forgery is stored first; only the successor's link tells the genuine record."""
    raw = lines(5)
    raw.insert(2, _later_fork(2, raw))
    return raw


def _fork_before_second_to_last() -> list[bytes]:
    """As above, at the group the reorder window's drain judges (its successor is the last group)."""
    raw = lines(5)
    raw.insert(3, _later_fork(3, raw))
    return raw


def _forked_last_record() -> list[bytes]:
    """Both link to the predecessor and hash right, nothing follows: the earlier stored one is kept."""
    raw = lines(4)
    raw.append(_later_fork(3, raw))
    return raw


def _foreign_last_record_first() -> list[bytes]:
    """A record re-sealed onto another predecessor, stored before the genuine last one (and before record 2, so
    that both genuine records stay in place): the link to record 2 decides."""
    raw = lines(4)
    raw.insert(2, lines(1, start=Head(CHAIN, 3, "cd" * 32))[0])
    return raw


def _forgery_then_copies() -> list[bytes]:
    """The forgery comes first in its group, then the genuine record twice: every copy is still named."""
    raw = lines(5)
    raw.insert(2, fork(2, raw))
    raw.insert(4, raw[3])
    return raw


def _duplicated_last() -> list[bytes]:
    raw = lines(4)
    raw.append(raw[3])
    return raw


def _first_line_misplaced() -> list[bytes]:
    raw = lines(5)
    raw.insert(0, raw.pop(2))
    return raw


def _genesis_then_its_forgery() -> list[bytes]:
    """Record 0 stored first, then a forged record 0: record 0 is in place by its genesis link alone."""
    raw = lines(4)
    raw.insert(1, fork(0, raw))
    return raw


def _order(*order: int) -> Callable[[], list[bytes]]:
    def build() -> list[bytes]:
        raw = lines(max(order) + 1)
        return [raw[i] for i in order]
    return build


def _duplicated_first() -> list[bytes]:
    raw = lines(3)
    return [raw[0], *raw]


FINDINGS: dict[str, tuple[Callable[[], list[bytes]], dict[str, Any], list[tuple[str, int | None, str]]]] = {
    "swapped neighbours": (_swapped, {}, [("reordered", 2, REORDERED), ("reordered", 3, REORDERED)]),
    "stored far out of order": (_far, {"window": 2}, [("missing", 1, GONE), ("reordered", 1, FAR)]),
    "relinked last record": (_relinked, {}, [("broken-link", 3, BROKEN)]),
    "fork stored before the genuine record": (_fork_before_genuine, {}, [("inserted", 2, INSERTED)]),
    "forked last record": (_forked_last_record, {}, [("inserted", 3, INSERTED)]),
    "foreign record before the genuine last one": (_foreign_last_record_first, {}, [("inserted", 3, INSERTED)]),
    "forgery then two copies": (_forgery_then_copies, {}, [("duplicate", 2, DUPLICATE), ("inserted", 2, INSERTED)]),
    "duplicated last record": (_duplicated_last, {}, [("duplicate", 3, DUPLICATE)]),
    "first stored line out of place": (_first_line_misplaced, {}, [("reordered", 2, REORDERED)]),
    "record 0 then a forged record 0": (_genesis_then_its_forgery, {}, [("inserted", 0, INSERTED)]),
    "fork before the second-to-last record": (_fork_before_second_to_last, {}, [("inserted", 3, INSERTED)]),
    "swapped last pair": (_order(0, 1, 2, 3, 5, 4), {}, [("reordered", 4, REORDERED), ("reordered", 5, REORDERED)]),
    "record late by the window's size": (_order(0, 2, 3, 1, 4, 5), {"window": 2}, [("reordered", 1, REORDERED)]),
    # every copy of record 2 out of place: the second one follows its own copy and is linked by nothing
    "duplicated and swapped": (_order(0, 1, 3, 2, 2, 4, 5), {}, [("duplicate", 2, DUPLICATE),
                                                                 ("reordered", 2, REORDERED),
                                                                 ("reordered", 3, REORDERED)]),
    # the first copy of record 2 is followed by its own copy: not between its neighbours' seqs
    "duplicated after a gap": (_order(0, 2, 2, 4, 3, 5), {"window": 2}, [
        ("missing", 1, GONE), ("duplicate", 2, DUPLICATE), ("reordered", 2, REORDERED), ("reordered", 3, REORDERED),
        ("reordered", 4, REORDERED)]),
    "duplicated first record": (_duplicated_first, {}, [("duplicate", 0, DUPLICATE)]),
}


@pytest.mark.parametrize("case", list(FINDINGS))
def test_each_tampering_is_named_by_kind_seq_and_detail(case: str) -> None:
    build, kwargs, expected = FINDINGS[case]
    raw = build()
    r = report(raw, **kwargs)
    assert detailed(r) == expected
    last = max(json.loads(line)["chain"]["seq"] for line in raw)
    assert (r.last_seq, r.unsealed_tail) == (last, last + 1)


# --- checkpoint heads against the records ---------------------------------------------------------------------------

def _rewritten_head(raw: list[bytes]) -> list[str]:
    return [cp.sign(KEY, CHAIN, 3, "cd" * 32)]


def _rewritten_tree(raw: list[bytes]) -> list[str]:
    return [cp.sign_tree(KEY, CHAIN, 3, b"\x07" * 32, "cd" * 32)]


# name: (checkpoints over six intact records, findings, checkpoints counted, unsealed_tail)
CHECKPOINTS: dict[str, tuple[Callable[[list[bytes]], list[str]], list[tuple[str, int | None, str]], int, int]] = {
    "head checkpoints matching": (lambda raw: [head_note(raw, 3), head_note(raw, 6)], [], 2, 0),
    "head and tree checkpoints matching": (lambda raw: [head_note(raw, 3), tree_note(raw, 5), head_note(raw, 6)],
                                           [], 3, 0),
    "last checkpoint before the end": (lambda raw: [head_note(raw, 3)], [], 1, 3),
    "tree checkpoint before the end": (lambda raw: [tree_note(raw, 4)], [], 1, 2),
    "checkpoint of one record": (lambda raw: [head_note(raw, 1)], [], 1, 5),
    "tree checkpoint without a head line, all records": (lambda raw: [tree_note(raw, 6, head=False)], [], 1, 0),
    "tree checkpoint without a head line, and a later head": (
        lambda raw: [tree_note(raw, 2, head=False), head_note(raw, 4)], [], 2, 2),
    "tree checkpoint without a head line past the end": (
        lambda raw: [cp.sign_tree(KEY, CHAIN, 7, b"\x07" * 32, "zz" * 32)], [("missing", 6, TRUNCATED)], 1, 6),
    "unreadable note, then a good one": (lambda raw: ["not a note", head_note(raw, 6)], [], 1, 0),
    "head checkpoint rewritten": (_rewritten_head, [("checkpoint-mismatch", 2, REWRITTEN)], 1, 3),
    "tree checkpoint's head rewritten": (_rewritten_tree, [("checkpoint-mismatch", 2, REWRITTEN)], 1, 3),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_checkpoints_are_held_against_the_records(case: str) -> None:
    notes, expected, count, unsealed = CHECKPOINTS[case]
    raw = lines(6)
    r = report(raw, notes(raw))
    findings = [f for f in detailed(r) if f[0] != "bad-signature"]  # the unreadable note: tested above
    assert (findings, r.checkpoints, r.unsealed_tail, r.records, r.last_seq) == (expected, count, unsealed, 6, 5)


@pytest.mark.parametrize(("kept", "size", "gone"), [(4, 6, [4, 5]), (4, 5, [4]), (4, 4, []), (5, 4, [])])
def test_records_a_checkpoint_covers_but_the_store_lacks_are_missing(kept: int, size: int, gone: list[int]) -> None:
    full = lines(6)
    r = report(full[:kept], [head_note(full, size)])
    assert detailed(r) == [("missing", seq, TRUNCATED) for seq in gone]
    assert (r.records, r.last_seq, r.unsealed_tail) == (kept, kept - 1, kept if size > kept else kept - size)


def test_empty_store_without_checkpoints_is_intact() -> None:
    r = report([])
    assert (r.intact, r.records, r.last_seq, r.unsealed_tail, r.checkpoints) == (True, 0, -1, 0, 0)


# --- the trusted checkpoint and the retention floor -----------------------------------------------------------------

def _trusted(kind: str, raw: list[bytes]) -> cp.Checkpoint:
    if kind == "head":
        return cp.parse(head_note(raw, 3))
    if kind == "tree":
        return cp.parse(tree_note(raw, 3))
    if kind == "head, rewritten":
        return cp.parse(cp.sign(KEY, CHAIN, 3, "cd" * 32))
    return cp.parse(cp.sign_tree(KEY, CHAIN, 3, bytes.fromhex(hash_of(raw[2])), "cd" * 32))


@pytest.mark.parametrize(("kind", "findings"), [
    ("head", []), ("tree", []),
    ("head, rewritten", [("checkpoint-mismatch", 2, UNTRUSTED)]),
    # a tree checkpoint's root is its tree root, never the head hash: here it holds record 2's hash, the head line not
    ("tree, head rewritten", [("checkpoint-mismatch", 2, UNTRUSTED)]),
])
def test_trusted_checkpoint_vouches_for_its_last_record_and_verification_starts_there(kind: str, findings) -> None:
    raw = lines(6)
    r = report(raw, trusted=_trusted(kind, raw))
    assert detailed(r) == findings
    assert (r.records, r.last_seq, r.unsealed_tail, r.expired) == (4, 5, 3, 0)


def test_trusted_checkpoint_past_the_stored_records_reports_them_missing() -> None:
    raw = lines(6)
    r = report(raw[:2], trusted=cp.parse(head_note(raw, 5)))
    assert detailed(r) == [("missing", 4, TRUNCATED)]
    assert (r.records, r.last_seq, r.unsealed_tail) == (0, 3, 0)


@pytest.mark.parametrize(("root", "findings"), [("genuine", []), ("rewritten", [("broken-link", 3, BROKEN)])])
def test_record_at_the_retention_floor_links_to_the_checkpoint_before_it(root: str, findings) -> None:
    """Retention removed records 0..2; the checkpoint of size 3 names the hash record 3 must link to."""
    full = lines(8)
    note3 = head_note(full, 3) if root == "genuine" else cp.sign(KEY, CHAIN, 3, "cd" * 32)
    r = report(full[3:], [note3], floor=3)
    assert detailed(r) == findings
    assert (r.records, r.expired, r.last_seq, r.unsealed_tail) == (5, 3, 7, 5)


# --- limits: findings listed, missing records listed one by one, progress lines -------------------------------------

def test_findings_beyond_the_limit_are_counted_not_listed() -> None:
    from audit.verify import MAX_FINDINGS
    junk = [Finding("inserted", None, "x")] * (MAX_FINDINGS + 2)
    r = verify(CHAIN, junk, [], KEY.public_key())
    assert (len(r.findings), r.truncated_findings) == (MAX_FINDINGS, 2)


def test_gap_one_past_the_limit_is_one_finding() -> None:
    raw = lines(MAX_LISTED_MISSING + 3)
    del raw[1:MAX_LISTED_MISSING + 2]
    assert detailed(report(raw)) == [
        ("missing", 1, f"{GONE}: seq 1..{MAX_LISTED_MISSING + 1} ({MAX_LISTED_MISSING + 1} records)")]


def synthetic(count: int) -> list[Rec]:
    """Records as an adapter hands them over (hashes made up, links consistent): cheap enough for 250,000."""
    def digest(seq: int) -> str:
        return f"{seq + 1:064x}"
    return [Rec(seq, digest(seq), digest(seq - 1) if seq else GENESIS, True, digest(seq), seq) for seq in range(count)]


@pytest.mark.parametrize("progress", [True, False, None])
def test_progress_is_one_line_on_stderr_every_250000_records(capsys, progress: bool | None) -> None:
    kwargs: dict[str, Any] = {} if progress is None else {"progress": progress}
    r = verify(CHAIN, synthetic(250_001), [], KEY.public_key(), window=0, **kwargs)
    assert (r.intact, r.records) == (True, 250_001)
    out, err = capsys.readouterr()
    assert (out, err) == ("", "verified 250000 records (seq 249999)\n" if progress else "")


def test_record_flagged_invalid_without_a_reason_is_modified_with_the_default_reason() -> None:
    recs = synthetic(3)
    recs[1].valid = False
    assert detailed(verify(CHAIN, recs, [], KEY.public_key())) == [("modified", 1, "content does not match its hash")]


# --- lines the shortcut cannot read: parsed in full -----------------------------------------------------------------

def nested(count: int) -> list[bytes]:
    """Records whose events carry an object named ``chain`` of their own: two ``"chain":{`` on each line, so
    every line is parsed, canonicalised and hashed in full."""
    head, out = Head(CHAIN), []
    for i in range(count):
        doc, head = seal({"@timestamp": "2026-01-01T00:00:00Z", "data": {"chain": {"n": i}}}, head)
        out.append(canonicalize(doc))
    return out


def test_records_parsed_in_full_are_intact() -> None:
    r = report(nested(4))
    assert (r.findings, r.records, r.last_seq) == ([], 4, 3)


def test_tampered_copy_parsed_in_full_is_inserted_not_a_duplicate() -> None:
    raw = nested(4)
    raw.insert(3, raw[2].replace(b'"n":2', b'"n":9'))
    assert detailed(report(raw)) == [("inserted", 2, INSERTED)]


@pytest.mark.parametrize(("field", "value"), [(b'"seq":1}', b'"seq":"1"}'), (b'"prev_hash":"', b'"prev_hash":7,"x":"')])
def test_chain_field_of_the_wrong_type_is_not_a_record(field: bytes, value: bytes) -> None:
    raw = lines(3)
    raw[1] = raw[1].replace(field, value, 1)
    r = report(raw)
    wrong = "stored entry #1 is not a chained record (chain fields have the wrong types)"
    assert detailed(r) == [("missing", 1, GONE), ("inserted", None, wrong)]


# --- the checkpoint promise: time zones, and where the finding sorts ------------------------------------------------

def test_timestamp_with_an_offset_is_read_in_that_offset() -> None:
    now = 1767225840.0  # 2026-01-01T00:04:00Z
    r = tail_report(1)
    judge_tail(r, Promise(every_records=10, every_seconds=60, grace_seconds=60), now, [(0, "2026-01-01T02:04:00+02:00")])
    assert r.findings == []


def test_timestamp_without_a_zone_is_utc_whatever_the_local_zone(monkeypatch) -> None:
    import time
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        r = tail_report(1)
        judge_tail(r, Promise(every_records=10, every_seconds=60, grace_seconds=60), 1767225840.0,
                   [(0, "2026-01-01T00:04:00")])
    finally:
        monkeypatch.undo()
        time.tzset()
    assert r.findings == []


def test_unsealed_finding_sorts_by_seq_with_unnumbered_findings_last() -> None:
    r = Report(CHAIN, records=3, last_seq=2, unsealed_tail=3,
               findings=[Finding("modified", 1, "m"), Finding("inserted", None, "i"), Finding("broken-link", 0, "b")])
    judge_tail(r, Promise(every_records=2, every_seconds=0), 0.0, [])
    assert [(f.kind, f.seq) for f in r.findings] == [
        ("broken-link", 0), ("unsealed", 0), ("modified", 1), ("inserted", None)]


def test_findings_sort_by_seq_then_kind_with_unnumbered_last() -> None:
    raw = lines(3)
    raw[0] = raw[0].replace(b'"n":0', b'"n":5')
    raw[1] = lines(1, start=Head(CHAIN, 1, "cd" * 32))[0]
    raw.insert(1, b'{"message": "hello"}')
    assert found(raw) == [("modified", 0), ("broken-link", 1), ("broken-link", 2), ("inserted", None)]


# --- the hybrid path: the full machinery over the chunks around a tampered one, in the same process ---------------

def chunked(raw: list[bytes], size: int, window: int) -> Report:
    from audit.verify import scan_chunk, verify_chunked
    parts = [raw[i:i + size] for i in range(0, len(raw), size)]
    return verify_chunked(CHAIN, [(scan_chunk(part, {0}, CHAIN), partial(list, part)) for part in parts], [],
                          KEY.public_key(), window=window)


@pytest.mark.parametrize("case", ["swapped", "fork", "duplicated and swapped"])
def test_hybrid_path_reports_what_the_full_path_reports(case: str) -> None:
    raw = lines(40)
    if case == "swapped":
        raw[9], raw[10] = raw[10], raw[9]
    elif case == "fork":
        raw.insert(10, _later_fork(10, raw))
    else:
        raw[9], raw[10] = raw[10], raw[9]
        raw.insert(11, raw[10])
    full = report(raw, window=2)
    assert not full.intact
    assert chunked(raw, 4, 2).as_dict() == full.as_dict()
