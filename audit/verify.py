"""Streaming chain verification: every link, hash, sequence number and checkpoint signature.

Records arrive in storage order (local store: file order; Elasticsearch: sorted by ``chain.seq``), each with a
``misplaced`` flag the storage adapter computed (see ``flag_misplaced`` and the Elasticsearch ``_id`` check). A
bounded reorder window sorts them by ``seq``; records sharing a ``seq`` form a group, and the genuine member of a
group is the one that links to its predecessor and is linked to by its successor. Memory is bounded by the window,
never by the chain length.

Finding kinds: modified, missing, inserted, reordered, duplicate, broken-link, bad-signature, checkpoint-mismatch.

``verify_in_order`` (the fast path, see the end of this module and docs/audit.md) reaches the same report without
the window for a chain stored intact and in order, from chunk summaries that worker processes can compute; it
declines anything else, which then goes through ``verify``.
"""

from __future__ import annotations

import heapq
import sys
from collections import deque
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint as cp
from audit.canonical import CanonicalError, canonicalize, loads
from audit.chain import GENESIS, canonical_link, intact_link, record_hash

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
    findings: list[Finding] = field(default_factory=list)
    truncated_findings: int = 0

    @property
    def intact(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {"intact": self.intact, "chain": self.chain, "records": self.records,
                "checkpoints": self.checkpoints, "unsealed_tail": self.unsealed_tail,
                "findings": [f.as_dict() for f in self.findings],
                "findings_not_listed": self.truncated_findings}


@dataclass
class Rec:
    seq: int
    hash: str  # as stored
    prev: str
    valid: bool  # the stored hash matches the content
    computed: str
    arrival: int
    misplaced: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.hash, self.computed)


class VerifyError(Exception):
    """Verification could not run (unreadable store, unreachable Elasticsearch, bad key)."""


def parse_record(raw: bytes | dict[str, Any], arrival: int) -> Rec | Finding:
    """A stored document as a ``Rec``; a line that is not a chained record at all is a finding."""
    try:
        if isinstance(raw, dict):
            doc, fast = raw, False
        else:
            parsed = loads(raw)
            doc, fast = parsed.value, parsed.fast
        link = doc["chain"]
        seq, stored, prev = link["seq"], link["hash"], link["prev_hash"]
        if not isinstance(seq, int) or not isinstance(stored, str) or not isinstance(prev, str):
            raise TypeError("chain fields have the wrong types")
        computed = record_hash(doc, fast)
    except (CanonicalError, KeyError, TypeError) as exc:
        return Finding("inserted", None, f"stored entry #{arrival} is not a chained record ({exc})")
    return Rec(seq, stored, prev, computed == stored, computed, arrival)


def flag_misplaced(recs: Iterable[Rec]) -> Iterator[Rec]:
    """File order: a record is in place when it links to (or is linked by) a neighbour, or its seq lies between
    its neighbours'. A swapped pair breaks both; a deleted neighbour breaks neither."""
    before: Rec | None = None
    pending: Rec | None = None
    for rec in recs:
        if pending is not None:
            _judge(before, pending, rec)
            before = pending
            yield pending
        pending = rec
    if pending is not None:
        _judge(before, pending, None)
        yield pending


def _judge(before: Rec | None, rec: Rec, after: Rec | None) -> None:
    linked = (before is not None and rec.prev == before.hash) or (after is not None and after.prev == rec.hash)
    if before is None and rec.prev == GENESIS:
        linked = True
    between = (before is None or before.seq < rec.seq) and (after is None or rec.seq < after.seq)
    rec.misplaced = not (linked or between)


class _Checkpoints:
    def __init__(self, chain_id: str, texts: Iterable[str], key: Ed25519PublicKey, report: Report) -> None:
        self.by_last: dict[int, list[bytes]] = {}
        self.max_size = 0
        origin = cp.origin_for(chain_id)
        for text in texts:
            try:
                note = cp.parse(text)
            except cp.CheckpointError as exc:
                report.findings.append(Finding("bad-signature", None, f"unreadable checkpoint: {exc}"))
                continue
            last = note.size - 1
            if not cp.verify(note, key):
                report.findings.append(Finding("bad-signature", last, f"checkpoint of size {note.size} is not "
                                               "signed by the trusted key"))
            elif note.origin != origin:
                report.findings.append(Finding("checkpoint-mismatch", last, f"checkpoint of size {note.size} "
                                               f"belongs to {note.origin!r}, not {origin!r}"))
            elif note.size > 0:
                self.by_last.setdefault(last, []).append(note.root)
                self.max_size = max(self.max_size, note.size)
                report.checkpoints += 1


class _Walker:
    """Consumes records sorted by seq (groups of equal seq) and records findings."""

    def __init__(self, report: Report, cps: _Checkpoints, start: int, anchor: bytes | None,
                 progress: bool) -> None:
        self.r, self.cps, self.exp, self.anchor = report, cps, start, anchor
        self.start = start
        self.prev: str | None = GENESIS if start == 0 else None
        self.last = start - 1
        self.progress = progress

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
            return  # before the trusted checkpoint: retention may have removed its predecessors
        if seq < self.exp:
            for rec in group:
                self.add(Finding("reordered", seq, "record stored far out of sequence order"))
            return
        if seq > self.exp:
            self.missing(self.exp, seq - 1, "no record with this seq")
            self.prev = None
        genuine = self._pick(group, nxt)
        if not genuine.valid:
            self.add(Finding("modified", seq, "content does not match its hash"))
        if self.prev is not None and genuine.prev != self.prev:
            self.add(Finding("broken-link", seq, "prev_hash does not match the previous record's hash"))
        self.against_checkpoints(seq, genuine.hash)
        self.prev, self.exp, self.last = genuine.hash, seq + 1, seq
        self.r.records += 1
        if self.progress and self.r.records % 250_000 == 0:
            print(f"verified {self.r.records} records (seq {seq})", file=sys.stderr, flush=True)

    def against_checkpoints(self, seq: int, digest: str) -> None:
        """The record at ``seq`` (hash ``digest``) against the trusted checkpoint and the signed ones."""
        if seq == self.start and self.anchor is not None and bytes.fromhex(digest) != self.anchor:
            self.add(Finding("checkpoint-mismatch", seq, "record disagrees with the trusted checkpoint"))
        for root in self.cps.by_last.get(seq, ()):
            if root.hex() != digest:
                self.add(Finding("checkpoint-mismatch", seq, "signed checkpoint disagrees with the records "
                                 "(history rewritten)"))

    def _pick(self, group: list[Rec], nxt: list[Rec] | None) -> Rec:
        seq = group[0].seq
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
        if self.cps.max_size - 1 > self.last:
            self.missing(self.last + 1, self.cps.max_size - 1,
                         "covered by a signed checkpoint but gone (tail truncated)")
        sealed = max([s + 1 for s in self.cps.by_last if s <= self.last] + [self.start if self.anchor else 0])
        self.r.unsealed_tail = max(0, self.last + 1 - sealed)


def verify(chain_id: str, stored: Iterable[Rec | Finding], checkpoints: Iterable[str], key: Ed25519PublicKey,
           trusted: cp.Checkpoint | None = None, progress: bool = False, window: int = WINDOW) -> Report:
    """Verify one chain; ``stored`` yields records (with ``misplaced`` set) in storage order."""
    report = Report(chain_id)
    cps = _Checkpoints(chain_id, checkpoints, key, report)
    start, anchor = (trusted.size - 1, trusted.root) if trusted else (0, None)
    walker = _Walker(report, cps, start, anchor, progress)
    heap: list[tuple[int, int, Rec]] = []
    groups: deque[list[Rec]] = deque()

    def emit(rec: Rec) -> None:
        if groups and groups[-1][0].seq == rec.seq:
            groups[-1].append(rec)
            return
        groups.append([rec])
        while len(groups) >= 3:
            walker.group(groups.popleft(), groups[0])

    for item in stored:
        if isinstance(item, Finding):
            walker.add(item)
            continue
        heapq.heappush(heap, (item.seq, item.arrival, item))
        if len(heap) > window:
            emit(heapq.heappop(heap)[2])
    while heap:
        emit(heapq.heappop(heap)[2])
    while groups:
        group = groups.popleft()
        walker.group(group, groups[0] if groups else None)
    walker.finish()
    return report


def trusted_checkpoint(text: str, key: Ed25519PublicKey) -> cp.Checkpoint:
    try:
        note = cp.parse(text)
    except cp.CheckpointError as exc:
        raise VerifyError(f"trusted checkpoint: {exc}") from None
    if not cp.verify(note, key):
        raise VerifyError("trusted checkpoint is not signed by the given public key")
    return note


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


def _full_link(line: bytes) -> tuple[int, str, str] | None:
    """A line in another shape than the shipper writes (e.g. reformatted, \\u-escaped): the full parse decides."""
    rec = parse_record(line, 0)
    return (rec.seq, rec.hash, rec.prev) if isinstance(rec, Rec) and rec.valid else None


def scan_chunk(lines: Iterable[bytes], wanted: Container[int], chain_id: str = "") -> ChunkSummary:
    """Summarise stored lines in file order, recording the hash at every seq in ``wanted``. Once the chain is
    under way the next seq and prev_hash are known, so a line in RFC 8785 form is checked without parsing."""
    chain_json = canonicalize(chain_id)
    marks: dict[int, str] = {}
    count, first_seq, first_prev, exp, last = 0, -1, "", -1, ""
    for line in lines:
        if count and (digest := canonical_link(line, chain_json, exp, last)) is not None:
            seq = exp
        else:
            link = intact_link(line) or _full_link(line)
            if link is None:
                return ChunkSummary(False)
            seq, digest, prev = link
            if count == 0:
                first_seq, first_prev = seq, prev
            elif seq != exp or prev != last:
                return ChunkSummary(False)
        if seq in wanted:
            marks[seq] = digest
        exp, last, count = seq + 1, digest, count + 1
    return ChunkSummary(count > 0, count, first_seq, first_prev, exp - 1, last, marks)


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
    start, anchor = (trusted.size - 1, trusted.root) if trusted else (0, None)
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
    walker = _Walker(report, cps, start, anchor, False)
    for seq in sorted({start, *(s for s in cps.by_last if start <= s <= last_seq)}):
        if seq not in marks:
            return None  # the scan was not asked for this seq: cannot judge it here
        walker.against_checkpoints(seq, marks[seq])
    walker.prev, walker.exp, walker.last = last_hash, last_seq + 1, last_seq
    report.records = last_seq - start + 1
    walker.finish()
    return report
