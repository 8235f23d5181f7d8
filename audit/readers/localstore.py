"""Reading a local store chain for ``verify``: every byte of the chain directory is a record or a finding.

The writer (audit/sinks/localstore.py) only ever creates ``records-<first seq, 20 digits>.jsonl`` segments, each
line ending in a newline, and ``checkpoints/<size, 20 digits>.note`` files. So anything else in the chain
directory (a stray file, an unterminated line at the end of a segment that is not the last, a segment holding
other seqs than its name says) is reported, never skipped: ``jq`` and other readers would see those bytes.

The only bytes that may legitimately lack a newline are at the end of the last segment while the shipper appends
(or after a crash, until it restarts and cuts them): they are looked at again after ``SETTLE`` seconds and
reported when still there.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from audit.canonical import canonicalize
from audit.tiles import TILES
from audit.verify import (
    ChunkSummary,
    Finding,
    Rec,
    VerifyError,
    flag_misplaced,
    parse_record,
    parses_as_record,
    peek_link,
    scan_chunk,
)
from audit.witness import STATE_FILE as WITNESS_STATE

SEGMENT = re.compile(r"records-(\d{20})\.jsonl")
NOTE = re.compile(r"\d{20}\.note")
COSIGNATURES = re.compile(r"\d{20}\.cosig")
SETTLE = 1.0
PIPE_BYTES = 1024 * 1024
CHUNK_BYTES = 1024 * 1024  # ~1.9k records: a finding costs few chunks of full path; still large enough to amortise IPC


@dataclass(frozen=True)
class Segment:
    path: Path
    complete: int  # bytes up to and including the last newline
    size: int
    first: int  # the seq of its first record (its name's, when that line is not a record)


@dataclass
class Layout:
    """A chain directory as found: its segments in the order of the seqs they hold, its notes, and findings
    about everything that is neither."""

    chain: str
    segments: list[Segment]
    notes: list[str]
    findings: list[Finding]


def _complete_size(path: Path, size: int) -> int:
    with open(path, "rb") as fh:
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            nl = fh.read(step).rfind(b"\n")
            if nl >= 0:
                return pos - step + nl + 1
            pos -= step
    return 0


def _first_seq(path: Path, chain_json: bytes) -> int | None:
    with open(path, "rb") as fh:
        line = fh.readline(1 << 20).rstrip(b"\n")
    link = peek_link(line, chain_json)
    if link is not None:
        return link[0]
    try:
        seq = orjson.loads(line)["chain"]["seq"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return seq if type(seq) is int else None


def _notes(directory: Path, findings: list[Finding]) -> list[str]:
    texts = []
    for path in sorted(directory.iterdir()):
        if (COSIGNATURES.fullmatch(path.name) or path.name == WITNESS_STATE) and path.is_file():
            continue  # witnesses' cosignatures of a note, the size each cosigned last (audit/witness.py)
        if not (NOTE.fullmatch(path.name) and path.is_file()):
            findings.append(Finding("stray", None, f"checkpoints/{path.name}: not a checkpoint note"))
            continue
        try:
            texts.append(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            findings.append(Finding("bad-signature", None, f"checkpoints/{path.name}: unreadable checkpoint: not "
                                    f"UTF-8 at byte {exc.start}"))
    return texts


def layout(store: Path, chain: str | None, must_exist: bool = True) -> Layout:
    """The chain directory's contents, checked against what the writer creates. ``VerifyError`` when the store
    or the chain does not exist, or the chain holds nothing at all, unless not ``must_exist`` (a trusted
    checkpoint vouches for records: then their absence is a finding)."""
    try:
        present = sorted(p.name for p in Path(store).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise VerifyError(f"{store}: cannot read the store: {exc.strerror}") from None
    if chain is None:
        if len(present) != 1:
            raise VerifyError(f"{store}: holds chains {present}; pick one with --chain")
        chain = present[0]
    chain_dir = Path(store) / chain
    if chain not in present:
        if not must_exist:
            return Layout(chain, [], [], [])
        raise VerifyError(f"{store}: no chain {chain!r} (chains there: {present})")
    try:
        return _layout(chain_dir, chain, must_exist)
    except OSError as exc:
        raise VerifyError(f"{chain_dir}: cannot read: {exc.strerror}") from None


def _layout(chain_dir: Path, chain: str, must_exist: bool) -> Layout:
    chain_json = canonicalize(chain)
    findings: list[Finding] = []
    notes: list[str] = []
    named: list[tuple[int, int, Path]] = []
    for path in sorted(chain_dir.iterdir()):
        match = SEGMENT.fullmatch(path.name)
        if path.name == "checkpoints" and path.is_dir():
            notes = _notes(path, findings)
        elif path.name == TILES and path.is_dir():
            continue  # the Merkle tiles: checked against the records and checkpoints by audit/treeverify.py
        elif match and path.is_file():
            first = _first_seq(path, chain_json) if path.stat().st_size else None
            named.append((int(match.group(1)) if first is None else first, int(match.group(1)), path))
        else:
            findings.append(Finding("stray", None, f"{path.name}: not a segment or checkpoint of this chain"))
    by_name = [path for _, _, path in sorted(named, key=lambda item: item[1])]
    segments = []
    for i, (first, _, path) in enumerate(sorted(named)):
        if by_name[i] != path:  # a whole segment moved: reported once here, then read where its seqs belong
            findings.append(Finding("reordered", first, f"segment {path.name} holds the records from seq {first} "
                                    "on: stored out of sequence order (segments swapped or renamed)"))
        size = path.stat().st_size
        segments.append(Segment(path, _complete_size(path, size), size, first))
    _check_tails(segments, findings)
    if must_exist and not segments and not notes and not findings:
        raise VerifyError(f"{chain_dir}: chain {chain!r} holds no records and no checkpoints")
    return Layout(chain, segments, notes, findings)


def _check_tails(segments: list[Segment], findings: list[Finding]) -> None:
    """Bytes after the last newline: never legitimate in a segment other than the last (in seq order); in the
    last one they are a line being appended, unless still there ``SETTLE`` seconds later."""
    for i, seg in enumerate(segments):
        if seg.complete == seg.size:
            continue
        last = i == len(segments) - 1
        if last:
            time.sleep(SETTLE)
            with open(seg.path, "rb") as fh:
                fh.seek(seg.complete)
                if b"\n" in fh.read(seg.size - seg.complete):
                    segments[i] = Segment(seg.path, seg.complete, seg.complete, seg.first)  # appended meanwhile
                    continue
        what = "an unterminated (torn or forged) line" if last else "bytes after its last newline"
        findings.append(Finding("stray", None, f"{seg.path.name}: {seg.size - seg.complete} bytes at offset "
                                f"{seg.complete}: {what}, not a record"))


def _lines(seg: Segment, start: int = 0) -> Iterator[bytes]:
    """The complete lines of a segment from byte ``start`` (a line start), without their newlines."""
    with open(seg.path, "rb") as fh:
        fh.seek(start)
        remaining = seg.complete - start
        for line in fh:
            if remaining <= 0:
                return
            remaining -= len(line)
            yield line[:-1]


def records(lay: Layout, sealed: int = 0) -> Iterator[Rec | Finding]:
    """Every line as a record (file order, misplacement flagged) or a finding, then the layout's findings.
    ``sealed``: lines of a seq below it may be checked without parsing (``verify.parse_record``)."""
    lines = (line for seg in lay.segments for line in _lines(seg))
    yield from records_of_lines(lines, lay.chain, sealed)
    yield from lay.findings


def records_of_lines(lines: Iterable[bytes], chain: str, sealed: int = 0) -> Iterator[Rec | Finding]:
    """Stored lines of ``chain`` as records (file order, misplacement flagged), then the lines' findings."""
    chain_json = canonicalize(chain)
    found: list[Finding] = []

    def parsed() -> Iterator[Rec]:
        expect: tuple[int, str] | None = None
        for arrival, line in enumerate(lines):
            item = parse_record(line, arrival, chain_json, expect, sealed)
            if isinstance(item, Finding):
                found.append(item)
                expect = None
            else:
                expect = (item.seq + 1, item.hash)
                yield item

    yield from flag_misplaced(parsed())
    yield from found


def tail(lay: Layout, first: int) -> Iterator[tuple[int, Any]]:
    """``(seq, @timestamp)`` of the records from seq ``first`` on (for the checkpoint promise)."""
    chain_json = canonicalize(lay.chain)
    later = [i for i, seg in enumerate(lay.segments) if seg.first > first]
    start = max(0, (later[0] if later else len(lay.segments)) - 1)  # the segment holding ``first``, and on
    for seg in lay.segments[start:]:
        for line in _lines(seg):
            link = peek_link(line, chain_json)
            if link is not None and link[0] < first:
                continue
            try:
                doc = orjson.loads(line)
                seq = doc["chain"]["seq"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if type(seq) is int and seq >= first:
                yield seq, doc.get("@timestamp")


def unsealed_lines_are_records(lay: Layout, sealed: int) -> bool:
    """Every line from seq ``sealed`` on, read in full, is the record the fast path took it for: past the last
    checkpoint a line's hash is its writer's choice, which ``canonical_link`` alone cannot refute."""
    chain_json = canonicalize(lay.chain)
    return all(parses_as_record(line, chain_json) for line in _unsealed(lay, sealed, chain_json))


def _unsealed(lay: Layout, sealed: int, chain_json: bytes) -> Iterator[bytes]:
    """The lines from seq ``sealed`` on that could have taken the shortcut (``peek_link`` reads a seq off them).
    The fast paths take it only in runs of records continuing the chain, so such lines follow record ``sealed`` in
    the file: read from there (found by binary search, not by reading the whole segment); from the start of its
    segment when the search fails (records out of order: then the full path has judged them anyway)."""
    found = _locate(lay, sealed)
    segments = tree_segments(lay, sealed) if found is None else lay.segments[lay.segments.index(found[0]):]
    for i, seg in enumerate(segments):
        for line in _lines(seg, found[1] if found is not None and i == 0 else 0):
            link = peek_link(line, chain_json)
            if link is not None and link[0] >= sealed:
                yield line


def seq_lines(lay: Layout, first: int) -> Iterator[tuple[int, bytes]]:
    """``(seq, stored line)`` of the records from seq ``first`` on, in file order (for the Merkle tree: the leaves
    are the stored bytes). Lines that are not records are left out; the chain walk reports them."""
    chain_json = canonicalize(lay.chain)
    for seg in tree_segments(lay, first):
        yield from seqs_of(_lines(seg), chain_json, first)


def tree_segments(lay: Layout, first: int) -> list[Segment]:
    """The segments ``seq_lines`` reads from seq ``first`` on: the one holding it and the later ones."""
    later = [i for i, seg in enumerate(lay.segments) if seg.first > first]
    return lay.segments[max(0, (later[0] if later else len(lay.segments)) - 1):]


def seqs_of(lines: Iterable[bytes], chain_json: bytes, first: int) -> Iterator[tuple[int, bytes]]:
    """``(seq, line)`` of the lines that are records from seq ``first`` on (see ``seq_lines``)."""
    for line in lines:
        link = peek_link(line, chain_json)
        if link is None:
            try:
                seq = orjson.loads(line)["chain"]["seq"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if type(seq) is not int:
                continue
        else:
            seq = link[0]
        if seq >= first:
            yield seq, line


def find_record(lay: Layout, seq: int) -> bytes | None:
    """The stored line of record ``seq``, by binary search over byte offsets within its segment (records are
    stored in seq order): O(log n) reads, whatever the store's size. None when it is not there."""
    found = _locate(lay, seq)
    return found[2] if found else None


def _locate(lay: Layout, seq: int) -> tuple[Segment, int, bytes] | None:
    """``find_record``'s search: the segment, the byte offset and the line of record ``seq``."""
    chain_json = canonicalize(lay.chain)
    holding = [seg for seg in lay.segments if seg.first <= seq]
    if not holding:
        return None
    seg = holding[-1]
    with open(seg.path, "rb") as fh:
        lo, hi = 0, seg.complete  # the line sought starts in [lo, hi)
        while lo < hi:
            mid = (lo + hi) // 2
            start = _line_start(fh, mid, lo)
            fh.seek(start)
            line = fh.readline().rstrip(b"\n")
            link = peek_link(line, chain_json)
            if link is None:
                return None  # not in the shipper's form: leave it to verify
            if link[0] == seq:
                return seg, start, line
            if link[0] < seq:
                lo = start + len(line) + 1
            elif start == lo:
                return None
            else:
                hi = start
    return None


def _line_start(fh: Any, pos: int, floor: int) -> int:
    """The start of the line holding byte ``pos`` (never before ``floor``, itself a line start)."""
    back = max(floor, pos - 65536)
    while True:
        fh.seek(back)
        chunk = fh.read(pos - back)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return back + nl + 1
        if back == floor:
            return floor
        back = max(floor, back - 65536)


# -- the fast path's chunks -------------------------------------------------------------------------------------

def ranges(lay: Layout, chunk_bytes: int) -> Iterator[tuple[Path, int, int]]:
    """``(segment, start, end)`` byte ranges of about ``chunk_bytes`` each, cut after a newline, covering exactly
    the complete lines, in seq order of the segments: units for verifying in parallel."""
    for seg in lay.segments:
        with open(seg.path, "rb") as fh:
            start = 0
            while start < seg.complete:
                end = seg.complete
                if start + chunk_bytes < seg.complete:
                    fh.seek(start + chunk_bytes - 1)
                    while (nl := (block := fh.read(1 << 16)).find(b"\n")) < 0:
                        pass  # a newline exists before ``complete``, so this ends
                    end = fh.tell() - len(block) + nl + 1
                yield seg.path, start, end
                start = end


def read_range(path: Path, start: int, end: int) -> list[bytes]:
    """The lines (without newlines) of a range from ``ranges``."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    return data.split(b"\n")[:-1]


@dataclass(frozen=True)
class Reread:
    """Reads a chunk's lines again (its segment is ``path``)."""

    path: Path
    start: int
    end: int

    def __call__(self) -> list[bytes]:
        return read_range(self.path, self.start, self.end)


def _worker(conn: Connection, tasks: list[tuple[Path, int, int]], wanted: frozenset[int], chain_id: str,
            tree: tuple[int, ...] | None) -> None:
    """Summaries of its share of the ranges, in order, through its own pipe."""
    for task in tasks:
        try:
            summary = scan_chunk(read_range(*task), wanted, chain_id, tree)
        except OSError:
            summary = ChunkSummary(False)
        conn.send(summary)
    conn.close()


Chunk = tuple[ChunkSummary, Reread]


def chunks(lay: Layout, wanted: frozenset[int], workers: int, chunk_bytes: int = CHUNK_BYTES,
           tree: tuple[int, ...] | None = None) -> Generator[Chunk, None, None]:
    """Chunk summaries in seq order of the segments, each with a way to read its lines again (a ``Reread``).
    With ``workers`` > 1, worker k scans ranges k, k+W, k+2W... and the results are read back round-robin: no
    shared queue or lock, so stopping early is a plain kill. Forked (cheap to start) and only from a process
    without other threads, so no lock can be inherited held; otherwise in process. The workers start now, not at
    the first summary asked for (the caller checks signatures meanwhile); close the iterator to stop them. A worker
    that dies raises ``VerifyError``. ``tree``: the sorted tree checkpoint sizes, for the leaf hashes
    (``scan_chunk``)."""
    tasks = list(ranges(lay, chunk_bytes))
    workers = min(workers, len(tasks))
    if workers <= 1 or threading.active_count() > 1:
        return ((scan_chunk(read_range(*task), wanted, lay.chain, tree), Reread(*task)) for task in tasks)
    started = _forked(tasks, wanted, lay.chain, tree, workers)
    next(started)  # past the start of the workers: from here, closing the generator stops them
    return started


def _forked(tasks: list[tuple[Path, int, int]], wanted: frozenset[int], chain: str, tree: tuple[int, ...] | None,
            workers: int) -> Generator[Any, None, None]:
    """``None`` once the workers are started, then the chunks."""
    ctx = multiprocessing.get_context("fork")
    procs, pipes = [], []
    try:
        for k in range(workers):
            receiver, sender = ctx.Pipe(duplex=False)
            _widen(sender)
            proc = ctx.Process(target=_worker, args=(sender, tasks[k::workers], wanted, chain, tree), daemon=True)
            proc.start()
            sender.close()
            procs.append(proc)
            pipes.append(receiver)
        yield None
        for i, task in enumerate(tasks):
            yield pipes[i % workers].recv(), Reread(*task)
    except EOFError:
        raise VerifyError("a verifying worker process died") from None
    finally:
        for proc in procs:
            proc.kill()
            proc.join()
        for receiver in pipes:
            receiver.close()


def _widen(pipe: Connection) -> None:
    """A 1 MiB pipe buffer (Linux's limit for unprivileged processes) instead of 64 KiB: a summary with its leaf
    hashes is ~60 KiB, and a worker must be able to run ~16 chunks ahead rather than wait for the parent to be
    scheduled after each one (it was, on a busy machine). Where the system refuses, the default buffer works too."""
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass


def default_workers() -> int:
    """One per usable core, at most 8 (each holds one chunk's lines: memory stays a few tens of MB)."""
    return max(1, min(8, len(os.sched_getaffinity(0))))
