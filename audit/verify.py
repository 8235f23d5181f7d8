"""Streaming chain verification: every link, hash, sequence number and checkpoint signature.

Records arrive in storage order (local store: file order; Elasticsearch: sorted by ``chain.seq``), each with a
``misplaced`` flag the storage adapter computed (see ``flag_misplaced`` and the Elasticsearch ``_id`` check). A
bounded reorder window sorts them by ``seq``; records sharing a ``seq`` form a group, and the genuine member of a
group is the one that links to its predecessor and is linked to by its successor. Memory is bounded by the window,
never by the chain length.

Finding kinds: modified, missing, inserted, reordered, duplicate, broken-link, bad-signature, checkpoint-mismatch,
unsealed (records past the checkpoint promise that no checkpoint covers), stray (bytes in the store that are not a
record). Records that fell out of retention are not findings: ``Report.expired`` counts them.

The stored bytes are the contract: the shipper writes every record as its RFC 8785 form (``chain.hash`` sorts first
in the chain object), so a record whose content hashes right but whose stored bytes differ from that form (a
respelled number, other whitespace or escapes, another key order) is ``modified``: readers would see other text.

``verify_in_order`` (the fast path, see the end of this module and docs/audit.md) reaches the same report without
the window for a chain stored intact and in order, from chunk summaries that worker processes can compute; it
declines anything else, which then goes through ``verify``.
"""

from __future__ import annotations

import datetime as dt
import heapq
import sys
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint as cp
from audit import merkle
from audit.canonical import CanonicalError, canonicalize, loads
from audit.chain import GENESIS, canonical_link, record_hash
from audit.tiles import HEIGHT

WINDOW = 4096
MAX_LISTED_MISSING = 100
MAX_FINDINGS = 10_000


@dataclass(frozen=True)
class Finding:
    kind: str
    seq: int | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "detail": self.detail}


@dataclass
class Report:
    chain: str
    records: int = 0
    checkpoints: int = 0
    unsealed_tail: int = 0
    expired: int = 0  # records 0..expired-1 fell out of retention (not a finding)
    last_seq: int = -1
    findings: list[Finding] = field(default_factory=list)
    truncated_findings: int = 0
    failure_store: list[dict[str, Any]] = field(default_factory=list)  # Elasticsearch: documents it refused
    witnessed_size: int | None = None  # with a witness policy: records covered by a checkpoint with its quorum

    @property
    def intact(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {"intact": self.intact, "chain": self.chain, "records": self.records,
                "checkpoints": self.checkpoints, "unsealed_tail": self.unsealed_tail, "expired": self.expired,
                "last_seq": self.last_seq,
                "findings": [f.as_dict() for f in self.findings],
                "findings_not_listed": self.truncated_findings, "failure_store": self.failure_store,
                "witnessed_size": self.witnessed_size}


@dataclass
class Rec:
    seq: int
    hash: str  # as stored
    prev: str
    valid: bool  # the stored bytes are the RFC 8785 form of content that matches the stored hash
    computed: str
    arrival: int
    misplaced: bool = False
    why: str = ""  # why not valid

    @property
    def key(self) -> tuple[str, str]:
        return (self.hash, self.computed)


class VerifyError(Exception):
    """Verification could not run (unreadable store, unreachable Elasticsearch, bad key, unknown chain)."""


@dataclass(frozen=True)
class Promise:
    """The shipper's promise: a checkpoint at least every ``every_records`` records and every ``every_seconds``
    seconds (0: no such promise); ``grace_seconds`` is the auditor's allowance for clocks and delivery."""

    every_records: int = 1000
    every_seconds: float = 60.0
    grace_seconds: float = 60.0


_HASHED = b'"chain":{"hash":"'


def peek_link(line: bytes, chain_json: bytes) -> tuple[int, str] | None:
    """``(seq, prev_hash)`` read off a line in the shipper's form without parsing; ``canonical_link`` then proves
    (or refutes) them. None when the line is not in that form."""
    at = line.find(_HASHED)
    if at < 0:
        return None
    head = b'","id":%s,"prev_hash":"' % chain_json
    p = at + 81
    if line[p:p + len(head)] != head:
        return None
    p += len(head)
    prev, tail = line[p:p + 64], line[p + 64:p + 72]
    if tail != b'","seq":':
        return None
    end = line.find(b"}", p + 72)
    digits = line[p + 72:end]
    if end < 0 or not digits.isdigit() or len(digits) > 19 or (digits[:1] == b"0" and digits != b"0"):
        return None
    return int(digits), prev.decode("ascii", "replace")


def parse_record(line: bytes, arrival: int, chain_json: bytes, expect: tuple[int, str] | None,
                 sealed: int) -> Rec | Finding:
    """A stored line as a ``Rec``; a line that is not a chained record of this chain at all is a finding.

    ``expect`` (the seq and prev_hash the previous line suggests) lets the common case skip parsing altogether:
    ``canonical_link`` proves the line is the RFC 8785 form of a sealed record (see audit/chain.py), but only for a
    seq below ``sealed`` (``sealed_size``). Past it no checkpoint vouches for the hash the line carries: its writer
    chose it, so the line is parsed in full."""
    if expect is not None and expect[0] < sealed and (digest := canonical_link(line, chain_json, *expect)):
        return Rec(expect[0], digest, expect[1], True, digest, arrival)
    link = peek_link(line, chain_json)
    if link is not None and link[0] < sealed and link != expect \
            and (digest := canonical_link(line, chain_json, *link)) is not None:
        return Rec(link[0], digest, link[1], True, digest, arrival)
    return _parse_full(line, arrival, chain_json)


def sealed_size(chain_id: str, checkpoints: Iterable[str], key: Ed25519PublicKey) -> int:
    """The size of the largest checkpoint of ``chain_id`` signed by ``key``: the records below it are vouched for
    (by its head hash and the links up to it), those from it on are the unsealed tail (``parse_record``)."""
    return _Checkpoints(chain_id, checkpoints, key, Report(chain_id)).max_size


def parses_as_record(line: bytes, chain_json: bytes) -> bool:
    """``line`` read in full is a valid record of the chain (what ``canonical_link`` took it for)."""
    item = _parse_full(line, 0, chain_json)
    return isinstance(item, Rec) and item.valid


def _parse_full(line: bytes, arrival: int, chain_json: bytes) -> Rec | Finding:
    try:
        parsed = loads(line)
        doc = parsed.value
        link = doc["chain"]
        seq, stored, prev = link["seq"], link["hash"], link["prev_hash"]
        if type(seq) is not int or not isinstance(stored, str) or not isinstance(prev, str):
            raise TypeError("chain fields have the wrong types")
        if canonicalize(link.get("id")) != chain_json:
            return Finding("inserted", seq, f"stored entry #{arrival} is a record of chain {link.get('id')!r}")
        computed = record_hash(doc, parsed.fast)
        form = canonicalize(doc, parsed.fast)
    except (CanonicalError, KeyError, TypeError, AttributeError) as exc:
        return Finding("inserted", None, f"stored entry #{arrival} is not a chained record ({exc})")
    why = ""
    if computed != stored:
        why = "content does not match its hash"
    elif form != line:
        why = "stored bytes are not the record's RFC 8785 form (content hashes right; e.g. a respelled number)"
    return Rec(seq, stored, prev, not why, computed, arrival, why=why)


def flag_misplaced(recs: Iterable[Rec]) -> Iterator[Rec]:
    """File order: a record is in place when it links to (or is linked by) a neighbour, or its seq lies between
    its neighbours'. A swapped pair breaks both; a deleted neighbour breaks neither."""
    judged: list[Rec] = []
    flagger = _Flagger(judged.append)
    for rec in recs:
        flagger.add(rec)
        yield from judged
        judged.clear()
    flagger.close(None)
    yield from judged


class _Flagger:
    """``flag_misplaced`` one record at a time, into ``out`` (the hybrid path needs to name the successor)."""

    def __init__(self, out: Callable[[Rec], None]) -> None:
        self.out = out
        self.before: Rec | None = None
        self.held: Rec | None = None

    def add(self, rec: Rec) -> None:
        if self.held is not None:
            _judge(self.before, self.held, rec)
            self.out(self.held)
            self.before = self.held
        self.held = rec

    def close(self, after: Rec | None) -> None:
        if self.held is not None:
            _judge(self.before, self.held, after)
            self.out(self.held)
            self.before, self.held = self.held, None


def _judge(before: Rec | None, rec: Rec, after: Rec | None) -> None:
    linked = (before is not None and rec.prev == before.hash) or (after is not None and after.prev == rec.hash)
    if before is None and rec.prev == GENESIS:
        linked = True
    between = (before is None or before.seq < rec.seq) and (after is None or rec.seq < after.seq)
    rec.misplaced = not (linked or between)


class _Checkpoints:
    """The signed checkpoints of one chain. The head hash of each (a head checkpoint's root, a tree checkpoint's
    ``tee-audit-head`` line) is compared with the record hash at ``size - 1`` (``by_last``); tree roots are
    recomputed from the stored records by audit/treeverify.py (``trees``: their sizes)."""

    def __init__(self, chain_id: str, texts: Iterable[str], key: Ed25519PublicKey, report: Report) -> None:
        self.by_last: dict[int, list[bytes]] = {}
        self.trees: set[int] = set()  # sizes of the tree checkpoints
        self.max_size = 0
        self.key = key
        origin = cp.origin_for(chain_id)
        for text in dict.fromkeys(texts):  # the same note stored twice (two streams) counts once
            try:
                note = cp.parse(text)
                tree = cp.is_tree(note, key)
                signed = tree or cp.verify(note, key)
            except (cp.CheckpointError, UnicodeError) as exc:
                report.findings.append(Finding("bad-signature", None, f"unreadable checkpoint: {exc}"))
                continue
            last = note.size - 1
            if not signed:
                report.findings.append(Finding("bad-signature", last, f"checkpoint of size {note.size} is not "
                                               "signed by the trusted key"))
            elif note.origin != origin:
                report.findings.append(Finding("checkpoint-mismatch", last, f"checkpoint of size {note.size} "
                                               f"belongs to {note.origin!r}, not {origin!r}"))
            elif note.size > 0:
                head = note.head if tree else note.root
                if tree:
                    self.trees.add(note.size)
                if head is not None:
                    self.by_last.setdefault(last, []).append(head)
                self.max_size = max(self.max_size, note.size)
                report.checkpoints += 1


@dataclass(frozen=True)
class Anchor:
    """Where verification starts: ``start`` (the first seq judged), the hash record ``start`` must have (a trusted
    checkpoint's root) or the prev_hash it must link to (a signed checkpoint ending just before it), and the size
    up to which records must exist."""

    start: int = 0
    root: bytes | None = None
    prev: str | None = GENESIS
    sealed: int = 0  # records 0..sealed-1 are covered by the trusted checkpoint
    expired: int = 0


def anchor_for(chain_id: str, cps: _Checkpoints, trusted: cp.Checkpoint | None, floor: int) -> Anchor:
    """The trusted checkpoint's record (a note of another chain is an error, not a switch), moved forward to the
    oldest record retention left (``floor``), whose predecessor a signed checkpoint may name."""
    start, root, sealed = 0, None, 0
    if trusted is not None:
        if trusted.origin != cp.origin_for(chain_id):
            raise VerifyError(f"the trusted checkpoint is of {trusted.origin!r}, not of chain {chain_id!r}")
        if trusted.size == 0:
            raise VerifyError("the trusted checkpoint is of an empty chain")
        start, root, sealed = trusted.size - 1, trusted.root, trusted.size
        if cp.is_tree(trusted, cps.key):
            root = trusted.head  # its tree root: checked against the records by audit/treeverify.py
    if floor > start:
        roots = cps.by_last.get(floor - 1, [])
        return Anchor(floor, None, roots[0].hex() if roots else None, max(sealed, floor), floor)
    return Anchor(start, root, GENESIS if start == 0 else None, sealed)


class _Walker:
    """Consumes records sorted by seq (groups of equal seq) and records findings."""

    def __init__(self, report: Report, cps: _Checkpoints, anchor: Anchor, progress: bool) -> None:
        self.r, self.cps, self.a = report, cps, anchor
        self.start = self.exp = anchor.start
        self.prev: str | None = anchor.prev
        self.last = anchor.start - 1
        self.progress = progress
        report.expired = anchor.expired

    def add(self, finding: Finding) -> None:
        if len(self.r.findings) < MAX_FINDINGS:
            self.r.findings.append(finding)
        else:
            self.r.truncated_findings += 1

    def missing(self, first: int, last: int, why: str) -> None:
        if last - first < MAX_LISTED_MISSING:
            for seq in range(first, last + 1):
                self.add(Finding("missing", seq, why))
        else:
            self.add(Finding("missing", first, f"{why}: seq {first}..{last} ({last - first + 1} records)"))

    def group(self, group: list[Rec], nxt: list[Rec] | None) -> None:
        seq = group[0].seq
        if seq < self.start:
            return  # before the trusted checkpoint, or expired: retention may have removed its predecessors
        if seq < self.exp:
            for _ in group:
                self.add(Finding("reordered", seq, "record stored far out of sequence order"))
            return
        if seq > self.exp:
            self.missing(self.exp, seq - 1, "no record with this seq")
            self.prev = None
        genuine = self._pick(group, nxt)
        self.commit(genuine)

    def commit(self, genuine: Rec) -> None:
        seq = genuine.seq
        if not genuine.valid:
            self.add(Finding("modified", seq, genuine.why or "content does not match its hash"))
        if self.prev is not None and genuine.prev != self.prev:
            self.add(Finding("broken-link", seq, "prev_hash does not match the previous record's hash"))
        self.against_checkpoints(seq, genuine.hash)
        self.prev, self.exp, self.last = genuine.hash, seq + 1, seq
        self.r.records += 1
        if self.progress and self.r.records % 250_000 == 0:
            print(f"verified {self.r.records} records (seq {seq})", file=sys.stderr, flush=True)

    def against_checkpoints(self, seq: int, digest: str) -> None:
        """The record at ``seq`` (hash ``digest``) against the trusted checkpoint and the signed ones."""
        if seq == self.start and self.a.root is not None and bytes.fromhex(digest) != self.a.root:
            self.add(Finding("checkpoint-mismatch", seq, "record disagrees with the trusted checkpoint"))
        for root in self.cps.by_last.get(seq, ()):
            if root.hex() != digest:
                self.add(Finding("checkpoint-mismatch", seq, "signed checkpoint disagrees with the records "
                                 "(history rewritten)"))

    def _pick(self, group: list[Rec], nxt: list[Rec] | None) -> Rec:
        seq = group[0].seq
        if len(group) == 1:
            rec = group[0]
            if rec.misplaced:
                self.add(Finding("reordered", seq, "record is stored out of sequence order"))
            return rec
        successors = {rec.prev for rec in nxt} if nxt and nxt[0].seq == seq + 1 else set()
        distinct: dict[tuple[str, str], list[Rec]] = {}
        for rec in group:
            distinct.setdefault(rec.key, []).append(rec)

        def score(key: tuple[str, str]) -> tuple[bool, bool, bool, int]:
            rec = distinct[key][0]
            return (rec.hash in successors, self.prev is not None and rec.prev == self.prev, rec.valid,
                    -rec.arrival)

        best = max(distinct, key=score)
        for key, copies in distinct.items():
            if key != best:
                self.add(Finding("inserted", seq, "a record with this seq that is not part of the chain"))
                continue
            for _ in copies[1:]:
                self.add(Finding("duplicate", seq, "the same record is stored more than once"))
            if all(rec.misplaced for rec in copies):
                self.add(Finding("reordered", seq, "record is stored out of sequence order"))
        return distinct[best][0]

    def finish(self) -> None:
        vouched = max(self.cps.max_size, self.a.sealed)
        if vouched - 1 > self.last:
            self.missing(max(self.last + 1, self.start), vouched - 1,
                         "covered by a signed checkpoint but gone (tail truncated)")
        covered = [s + 1 for s in self.cps.by_last if s <= self.last]
        covered += [s for s in self.cps.trees if s <= self.last + 1]
        sealed = max([*covered, self.a.sealed, self.start])
        self.r.unsealed_tail = max(0, self.last + 1 - sealed)
        self.r.last_seq = self.last
        # A total order: the paths push a line's finding (a record of another chain) and the walker's findings of
        # its seq at different times (the full path after every record, a region at the line, a window's size later)
        self.r.findings.sort(key=lambda f: (f.seq is None, f.seq or 0, f.kind, f.detail))


class _Machine:
    """The full path's reorder window and seq groups in front of a walker, fed one record or finding at a time."""

    def __init__(self, walker: _Walker, window: int) -> None:
        self.walker, self.window = walker, window
        self.heap: list[tuple[int, int, Rec]] = []
        self.groups: deque[list[Rec]] = deque()

    def push(self, item: Rec | Finding) -> None:
        if isinstance(item, Finding):
            self.walker.add(item)
            return
        if not self.window:  # a source already sorted by seq (Elasticsearch)
            self._emit(item)
            return
        heapq.heappush(self.heap, (item.seq, item.arrival, item))
        if len(self.heap) > self.window:
            self._emit(heapq.heappop(self.heap)[2])

    def _emit(self, rec: Rec) -> None:
        groups = self.groups
        if groups and groups[-1][0].seq == rec.seq:
            groups[-1].append(rec)
            return
        groups.append([rec])
        while len(groups) >= 3:
            self.walker.group(groups.popleft(), groups[0])

    def drain(self) -> None:
        while self.heap:
            self._emit(heapq.heappop(self.heap)[2])
        while self.groups:
            group = self.groups.popleft()
            self.walker.group(group, self.groups[0] if self.groups else None)

    def pending(self) -> list[Rec]:
        return [rec for group in self.groups for rec in group] + [entry[2] for entry in self.heap]


def verify(chain_id: str, stored: Iterable[Rec | Finding], checkpoints: Iterable[str], key: Ed25519PublicKey,
           trusted: cp.Checkpoint | None = None, progress: bool = False, window: int = WINDOW,
           floor: int = 0) -> Report:
    """Verify one chain; ``stored`` yields records (with ``misplaced`` set) in storage order. ``floor``: the first
    seq retention left (records below it expired). Raises only ``VerifyError``."""
    report = Report(chain_id)
    cps = _Checkpoints(chain_id, checkpoints, key, report)
    walker = _Walker(report, cps, anchor_for(chain_id, cps, trusted, floor), progress)
    machine = _Machine(walker, window)
    for item in stored:
        machine.push(item)
    machine.drain()
    walker.finish()
    return report


def trusted_checkpoint(text: str, key: Ed25519PublicKey) -> cp.Checkpoint:
    try:
        note = cp.parse(text)
        signed = cp.signed_any(note, key)
    except (cp.CheckpointError, UnicodeError) as exc:
        raise VerifyError(f"trusted checkpoint: {exc}") from None
    if not signed:
        raise VerifyError("trusted checkpoint is not signed by the given public key")
    return note


# The checkpoint promise. A checkpoint protects only what it covers; past the last one, a record can be forged
# or cut without any signature noticing. The shipper promises a checkpoint every N records and every T seconds,
# so a longer uncovered tail, or one holding records older than T (plus the auditor's grace), is a finding.


def _age(stamp: Any, now: float) -> float | None:
    """Seconds since ``stamp`` (an ISO 8601 ``@timestamp``); None when it is not one."""
    if not isinstance(stamp, str):
        return None
    try:
        when = dt.datetime.fromisoformat(stamp)  # 3.11 reads "Z"
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return now - when.timestamp()


def judge_tail(report: Report, promise: Promise | None, now: float,
               tail: Iterable[tuple[int, Any]]) -> None:
    """Add an ``unsealed`` finding when the uncovered tail breaks ``promise``. ``tail`` yields ``(seq,
    @timestamp)`` of the uncovered records (read only when the count alone does not decide)."""
    if promise is None or report.unsealed_tail == 0:
        return
    last = report.last_seq
    first = last - report.unsealed_tail + 1
    n = report.unsealed_tail
    if promise.every_records and n > promise.every_records:
        reason = f"{n} records, but the shipper signs a checkpoint at least every {promise.every_records}"
    elif promise.every_seconds:
        limit = promise.every_seconds + promise.grace_seconds
        stale = [seq for seq, stamp in tail if (age := _age(stamp, now)) is None or age > limit
                 or age < -promise.grace_seconds]
        if not stale:
            return
        reason = (f"{len(stale)} of them timestamped more than {limit:g} s ago (or in the future), but the "
                  f"shipper signs a checkpoint at least every {promise.every_seconds:g} s")
    else:
        return
    report.findings.append(Finding("unsealed", first, f"records {first}..{last} are covered by no checkpoint: "
                                   f"{reason}"))
    report.findings.sort(key=lambda f: (f.seq is None, f.seq or 0, f.kind))


# The fast path. A chain stored intact and in order (every line proves its own hash, seqs consecutive, every link
# holds) gets the same report as from ``verify``, computed from per-chunk summaries that can be produced in
# parallel. Anything irregular makes ``scan_chunk`` or ``verify_in_order`` give up (``ok=False`` / None) and the
# caller runs ``verify``, which alone decides findings about records; so the fast path can only ever be stricter.


@dataclass
class ChunkSummary:
    """One run of consecutive, linked, intact records (or ``ok=False``: something there needs the full path)."""

    ok: bool
    count: int = 0
    first_seq: int = -1
    first_prev: str = ""
    last_seq: int = -1
    last_hash: str = ""
    marks: dict[int, str] = field(default_factory=dict)  # hash at each seq a checkpoint asks about
    lines: int = 0  # lines in the chunk, whatever they hold
    # Asked for the Merkle tree (``tree``) and intact: merkle.leaf_run of the lines, bytes not lists, so the pipe
    # from a worker carries ~32 bytes per record.
    leaves: bytes = b""
    groups: bytes = b""
    pieces: dict[int, bytes] = field(default_factory=dict)


def scan_chunk(lines: list[bytes], wanted: Container[int], chain_id: str = "",
               tree: Sequence[int] | None = None) -> ChunkSummary:
    """Summarise stored lines in file order, recording the hash at every seq in ``wanted``. Every line must be
    in the shipper's form (checked by ``canonical_link`` without parsing); the first line's seq and prev_hash
    are read off it, the following ones must continue the chain. With ``tree`` (the sorted tree checkpoint sizes),
    an intact chunk also carries its lines' RFC 9162 leaf hashes and subtree roots (audit/treeverify.py)."""
    chain_json = canonicalize(chain_id)
    marks: dict[int, str] = {}
    count, first_seq, first_prev, exp, last = 0, -1, "", -1, ""
    for line in lines:
        if count == 0:
            link = peek_link(line, chain_json)
            if link is None:
                return ChunkSummary(False, lines=len(lines))
            first_seq, first_prev = link
            exp, last = link
        digest = canonical_link(line, chain_json, exp, last)
        if digest is None:
            return ChunkSummary(False, lines=len(lines))
        if exp in wanted:
            marks[exp] = digest
        exp, last, count = exp + 1, digest, count + 1
    summary = ChunkSummary(count > 0, count, first_seq, first_prev, exp - 1, last, marks, len(lines))
    if tree is not None and summary.ok:
        summary.leaves, summary.groups, summary.pieces = merkle.leaf_run(first_seq, lines, tree, HEIGHT)
    return summary


def checked_seqs(checkpoints: Iterable[str], chain_id: str, key: Ed25519PublicKey,
                 trusted: cp.Checkpoint | None) -> frozenset[int]:
    """The seqs whose hashes the checkpoints are compared with: what ``scan_chunk`` must remember."""
    cps = _Checkpoints(chain_id, checkpoints, key, Report(chain_id))
    return frozenset(cps.by_last) | {trusted.size - 1 if trusted else 0}


def verify_in_order(chain_id: str, chunks: Iterable[ChunkSummary], checkpoints: Iterable[str],
                    key: Ed25519PublicKey, trusted: cp.Checkpoint | None = None,
                    progress: bool = False) -> Report | None:
    """``verify``'s report for a chain whose chunks (in file order) are all intact and link up; None otherwise.

    For such a chain ``verify`` finds every record in place, valid and linked, so its only possible findings come
    from the checkpoints (signatures, roots against the records, a truncated tail): computed here the same way,
    in the same order, by the same code."""
    report = Report(chain_id)
    cps = _Checkpoints(chain_id, checkpoints, key, report)
    anchor = anchor_for(chain_id, cps, trusted, 0)
    start = anchor.start
    first: ChunkSummary | None = None
    last_seq, last_hash = -1, ""
    marks: dict[int, str] = {}
    for chunk in chunks:
        if not chunk.ok:
            return None
        if first is None:
            first = chunk
        elif chunk.first_seq != last_seq + 1 or chunk.first_prev != last_hash:
            return None
        if progress and (last_seq + 1) // 250_000 != (chunk.last_seq + 1) // 250_000:
            print(f"verified {chunk.last_seq + 1} records (seq {chunk.last_seq})", file=sys.stderr, flush=True)
        last_seq, last_hash = chunk.last_seq, chunk.last_hash
        marks.update(chunk.marks)
    if first is None or first.first_seq > start or last_seq < start:
        return None  # empty, or records missing before the start: the full path reports them
    if first.first_seq == 0 and first.first_prev != GENESIS:
        return None
    walker = _Walker(report, cps, anchor, False)
    for seq in sorted({start, *(s for s in cps.by_last if start <= s <= last_seq)}):
        if seq not in marks:
            return None  # the scan was not asked for this seq: cannot judge it here
        walker.against_checkpoints(seq, marks[seq])
    walker.prev, walker.exp, walker.last = last_hash, last_seq + 1, last_seq
    report.records = last_seq - start + 1
    walker.finish()
    return report


# The hybrid path (local store, no trusted checkpoint). Chunks whose summaries are intact and continue the chain
# are committed in bulk; a chunk that is not (a finding somewhere in it) is verified by the full path's machinery
# (``_Machine``) over its lines, together with the chunks around it that could meet its records in the reorder
# window, and bulk commits resume once nothing pending can. The report equals ``verify``'s because a record only
# meets records less than ``window`` positions away:
# - an intact chunk is committed only once ``window + 2`` records of intact, continuing chunks follow it, held back
#   unread; a chunk that is not intact makes the full machinery read the held chunks first, so everything it has
#   not read was already committed by ``verify`` too when the first record of that chunk arrives;
# - after such a chunk, the full machinery hands back only once ``window + 2`` intact, continuing records follow,
#   held back again, and only when every record it still holds has a smaller seq than the first held chunk, the
#   largest alone at its seq and linked to by that chunk (so no later record joins a group it holds, its last
#   group's verdict does not depend on the next one, and the chain continues); the record it read last is judged
#   misplaced or not with that chunk's first record as successor, exactly as ``flag_misplaced`` does in one pass.


class _Region:
    """The full path over a stretch of chunks."""

    def __init__(self, walker: _Walker, window: int, chain_json: bytes) -> None:
        self.machine = _Machine(walker, window)
        self.flagger = _Flagger(self.machine.push)
        self.chain_json = chain_json
        self.sealed = walker.cps.max_size

    def feed(self, lines: list[bytes], arrival: int) -> None:
        expect: tuple[int, str] | None = None
        for line in lines:
            item = parse_record(line, arrival, self.chain_json, expect, self.sealed)
            arrival += 1
            if isinstance(item, Finding):
                self.machine.push(item)
                expect = None
            else:
                self.flagger.add(item)
                expect = (item.seq + 1, item.hash)

    def hand_back(self, nxt: ChunkSummary) -> bool:
        """Drain and return True when bulk commits may resume with ``nxt`` (see above)."""
        self.flagger.close(Rec(nxt.first_seq, "", nxt.first_prev, True, "", -1))
        pending = self.machine.pending()
        top = [rec for rec in pending if rec.seq >= nxt.first_seq - 1]
        if (len(top) != 1 or top[0].seq != nxt.first_seq - 1 or top[0].hash != nxt.first_prev
                or self.machine.walker.exp > top[0].seq):
            return False
        self.machine.drain()
        return True

    def finish(self) -> None:
        self.flagger.close(None)
        self.machine.drain()


def _commit_run(walker: _Walker, run: ChunkSummary) -> None:
    """An intact run of records continuing the chain, as ``_Walker.group`` would commit them one by one."""
    for seq in sorted(s for s in walker.cps.by_last if run.first_seq <= s <= run.last_seq):
        walker.against_checkpoints(seq, run.marks[seq])
    walker.prev, walker.exp, walker.last = run.last_hash, run.last_seq + 1, run.last_seq
    walker.r.records += run.count


_Held = tuple[ChunkSummary, Callable[[], list[bytes]], int]


def verify_chunked(chain_id: str, chunks: Iterable[tuple[ChunkSummary, Callable[[], list[bytes]]]],
                   checkpoints: Iterable[str], key: Ed25519PublicKey, window: int = WINDOW) -> Report:
    """``verify``'s report from chunk summaries in file order (each with a way to read its lines again), reading
    lines only around the chunks that are not intact. Every checkpoint seq must be in the summaries' marks."""
    report = Report(chain_id)
    cps = _Checkpoints(chain_id, checkpoints, key, report)
    walker = _Walker(report, cps, Anchor(), False)
    chain_json = canonicalize(chain_id)
    held: deque[_Held] = deque()  # intact, continuing, not yet committed (nor read by a region)
    count = 0  # records in ``held``
    region: _Region | None = None
    arrival = 0

    def continues(run: ChunkSummary) -> bool:
        if held:
            return run.first_seq == held[-1][0].last_seq + 1 and run.first_prev == held[-1][0].last_hash
        return region is None and run.first_seq == walker.exp and run.first_prev == walker.prev

    for summary, reread in chunks:
        if summary.ok and summary.count >= 2 and (continues(summary) or (region is not None and not held)):
            held.append((summary, reread, arrival))
            count += summary.count
        else:
            region = region or _Region(walker, window, chain_json)
            for run, again, at in held:
                region.feed(again(), at)
            held.clear()
            count = 0
            region.feed(reread(), arrival)
        arrival += summary.lines
        while held and count - held[0][0].count >= window + 2:
            if region is not None and not region.hand_back(held[0][0]):
                run, again, at = held.popleft()
                count -= run.count
                region.feed(again(), at)
                continue
            region = None
            count -= held[0][0].count
            _commit_run(walker, held.popleft()[0])
    if region is not None:
        for run, again, at in held:
            region.feed(again(), at)
        region.finish()
    else:
        for run, _, _ in held:
            _commit_run(walker, run)
    walker.finish()
    return report
