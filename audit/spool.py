"""The durable spool between the chain and the sinks: append-only segment files, fsync'd before anything that
depends on them (a source offset, a sink cursor) moves.

Each line is ``<header JSON>\\t<document JSON>\\n``; compact JSON never contains a raw tab, so splitting at the first
tab is exact and the document bytes go to the sinks without being re-serialised. Header kinds: ``r`` (a sealed
record: seq, hash, spool time, source position) and ``c`` (a signed checkpoint note).

The state also holds the Merkle frontier of the records chained so far (audit/merkle.py ``Frontier``: O(log n)
hashes), from which the shipper signs tree checkpoints. A state written before tee-audit v2 has none: such a chain
keeps head checkpoints (docs/audit.md, "Transparency log", migration).

Crash safety (kill -9 at any instruction): ``state.json`` (chain head, source offsets, the spool end it describes)
is replaced atomically after each fsync'd append; on start the spool cuts a torn last line off and replays every
entry after the state's position, so the head and the offsets are exactly those of the last durable entry. Sink
cursors (``cursor-<sink>.json``) are positions in the spool; a sink replays from its cursor and is idempotent.
Segments behind every cursor are deleted; the byte total is the backpressure signal.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.chain import GENESIS, Head
from audit.merkle import Frontier, leaf_hash
from common.fsio import write_atomic

SEGMENT_BYTES = 16 * 1024 * 1024

log = logging.getLogger(__name__)


class SpoolError(Exception):
    """The spool cannot be written (disk full, read-only) or its state is unusable."""


@dataclass(frozen=True, order=True)
class Pos:
    segment: int
    offset: int


@dataclass
class Entry:
    kind: str  # "r" record, "c" checkpoint
    header: dict[str, Any]
    doc: bytes = b""
    end: Pos = Pos(0, 0)
    encoded_header: bytes | None = None
    leaf: bytes | None = None  # a record's RFC 9162 leaf hash, when the shipper computed it already


def record_entry(seq: int, digest: str, stamp: float, src: list[Any] | None, doc: bytes,
                 leaf: bytes | None = None) -> Entry:
    """A record entry with its header serialised once (the hot path of shipping)."""
    header = {"k": "r", "seq": seq, "hash": digest, "t": stamp, "src": src}
    encoded = b'{"k":"r","seq":%d,"hash":"%s","t":%r,"src":%s}' % (
        seq, digest.encode(), stamp, b"null" if src is None else _src_json(src))
    return Entry("r", header, doc, Pos(0, 0), encoded, leaf)


_SRC_KEYS: dict[str, bytes] = {}


def _src_json(src: list[Any]) -> bytes:
    key = _SRC_KEYS.get(src[0])
    if key is None:
        key = _SRC_KEYS[src[0]] = json.dumps(src[0]).encode()
    return b"[%s,%d,%d]" % (key, src[1], src[2])


@dataclass
class State:
    head: Head
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    since_checkpoint: int = 0
    end: Pos = Pos(0, 0)
    tree: Frontier | None = field(default_factory=Frontier)  # None: a v1 chain without one (head checkpoints)

    def to_json(self) -> bytes:
        tree = None if self.tree is None else [h.hex() for h in self.tree.hashes]
        return json.dumps({"chain": self.head.chain_id, "next_seq": self.head.next_seq, "hash": self.head.hash,
                           "offsets": self.offsets, "since_checkpoint": self.since_checkpoint,
                           "end": [self.end.segment, self.end.offset], "tree": tree}).encode()


def encode(entry: Entry) -> bytes:
    head = entry.encoded_header or json.dumps(entry.header, separators=(",", ":")).encode()
    return head + b"\t" + entry.doc + b"\n"


def _decode(line: bytes, end: Pos) -> Entry:
    head, _, doc = line.rstrip(b"\n").partition(b"\t")
    header = json.loads(head)
    return Entry(header["k"], header, doc, end)


class Spool:
    def __init__(self, directory: Path, chain_id: str, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.state = self._load_state(chain_id)
        self._cut_torn_tail()
        self._replay()
        self.durable_end = self.state.end if (self.dir / "state.json").exists() else Pos(0, 0)
        self._fh: Any = None
        self.bytes = sum(p.stat().st_size for p in self._segments())

    # -- recovery ---------------------------------------------------------------------------------------------
    def _load_state(self, chain_id: str) -> State:
        path = self.dir / "state.json"
        if not path.exists():
            first = self._segments()
            start = Pos(int(first[0].stem), 0) if first else Pos(0, 0)
            return State(Head(chain_id), end=start)
        data = json.loads(path.read_bytes())
        if data["chain"] != chain_id:
            raise SpoolError(f"{self.dir} belongs to chain {data['chain']!r}, not {chain_id!r}")
        tree = data.get("tree")
        frontier = (Frontier(data["next_seq"], [bytes.fromhex(h) for h in tree]) if tree is not None
                    else Frontier() if data["next_seq"] == 0 else None)
        return State(Head(chain_id, data["next_seq"], data["hash"]), data["offsets"], data["since_checkpoint"],
                     Pos(*data["end"]), frontier)

    def _segments(self) -> list[Path]:
        return sorted(self.dir.glob("*.spool"))

    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:012d}.spool"

    def _cut_torn_tail(self) -> None:
        segs = self._segments()
        if not segs:
            return
        data = segs[-1].read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            with open(segs[-1], "rb+") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())

    def _replay(self) -> None:
        for entry in self.read(self.state.end):
            self._account(entry)
            self.state.end = entry.end

    def _account(self, entry: Entry) -> None:
        h = entry.header
        if entry.kind == "r":
            tree = self.state.tree
            if tree is not None:
                if tree.size == h["seq"]:
                    tree.append(entry.leaf or leaf_hash(entry.doc))
                else:  # cannot happen for a spool this shipper wrote; never sign a root that would be wrong
                    self.state.tree = None
            self.state.head = Head(self.state.head.chain_id, h["seq"] + 1, h["hash"])
            self.state.since_checkpoint += 1
            if h.get("src"):
                key, ino, offset = h["src"]
                self.state.offsets[key] = {"ino": ino, "offset": offset}
        elif entry.kind == "c":
            self.state.since_checkpoint = 0

    # -- reading ----------------------------------------------------------------------------------------------
    def read(self, start: Pos, limit: int | None = None, end: Pos | None = None) -> Iterator[Entry]:
        """Entries after ``start`` (up to ``end``) in order, each with the position just after it."""
        count = 0
        for seg in self._segments():
            number = int(seg.stem)
            if number < start.segment:
                continue
            if end is not None and number > end.segment:
                return
            offset = start.offset if number == start.segment else 0
            with open(seg, "rb") as fh:
                fh.seek(offset)
                for line in fh:
                    if not line.endswith(b"\n"):
                        return  # being written right now
                    offset += len(line)
                    if end is not None and Pos(number, offset) > end:
                        return
                    yield _decode(line, Pos(number, offset))
                    count += 1
                    if limit is not None and count >= limit:
                        return

    @property
    def end(self) -> Pos:
        return self.state.end

    # -- writing ----------------------------------------------------------------------------------------------
    def append(self, entries: list[Entry], offsets: dict[str, dict[str, int]] | None = None) -> None:
        """Write ``entries`` durably (raising ``SpoolError`` when they are not), then record the new state."""
        if not entries and not offsets:
            return
        if entries:
            try:
                fh = self._writer()
                data = b"".join(encode(e) for e in entries)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                self._abandon_partial()
                raise SpoolError(f"{self.dir}: cannot write the spool: {exc.strerror or exc}") from None
            for entry in entries:
                self._account(entry)
            self.bytes += len(data)
            self.state.end = Pos(int(Path(fh.name).stem), fh.tell())
        if offsets:
            self.state.offsets.update(offsets)
        self._save_state()

    def _save_state(self) -> None:
        """The entries are durable already; a stale state file only means a longer replay on the next start."""
        try:
            write_atomic(self.dir / "state.json", self.state.to_json())
            self.durable_end = self.state.end
        except OSError as exc:
            log.warning("spool state not saved; it will be rebuilt from the spool on restart",
                        extra={"dir": str(self.dir), "error": exc.strerror or str(exc)})

    def _abandon_partial(self) -> None:
        """After a failed write (disk full) cut the segment back to the last durable entry, so a retry appends
        cleanly; nothing not yet fsync'd was acknowledged to anyone."""
        if self._fh is None:
            return
        try:
            self._fh.close()
        except OSError:
            pass
        self._fh = None
        path = self._path(self.state.end.segment)
        try:
            if path.exists() and path.stat().st_size > self.state.end.offset:
                os.truncate(path, self.state.end.offset)
        except OSError:
            pass
        self.bytes = sum(p.stat().st_size for p in self._segments())

    def _writer(self) -> Any:
        if self._fh is not None and self._fh.tell() < self.segment_bytes:
            return self._fh
        segs = self._segments()
        if self._fh is None and segs and segs[-1].stat().st_size < self.segment_bytes:
            self._fh = open(segs[-1], "ab")  # noqa: SIM115 - kept open across appends
            return self._fh
        if self._fh is not None:
            self._fh.close()
        number = int(segs[-1].stem) + 1 if segs else 0
        self._fh = open(self._path(number), "ab")  # noqa: SIM115 - kept open across appends
        return self._fh

    def collect(self, cursors: list[Pos]) -> None:
        """Delete segments every sink has moved past."""
        # never behind the position the state file on disk describes: replay starts there
        oldest = min(cursors + [self.durable_end]).segment
        for seg in self._segments():
            if int(seg.stem) < oldest:
                self.bytes -= seg.stat().st_size
                seg.unlink()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class Cursor:
    """A sink's durable position in the spool and the next seq it has not acknowledged."""

    def __init__(self, spool: Spool, sink: str) -> None:
        self.path = spool.dir / f"cursor-{sink}.json"
        if self.path.exists():
            data = json.loads(self.path.read_bytes())
            self.pos, self.next_seq = Pos(*data["pos"]), data["next_seq"]
        else:
            segs = sorted(spool.dir.glob("*.spool"))
            self.pos, self.next_seq = Pos(int(segs[0].stem) if segs else 0, 0), 0

    def advance(self, pos: Pos, next_seq: int) -> None:
        """A cursor file that cannot be saved (disk full) only means the sink is sent some records again after a
        restart, which it ignores (409 / seq already stored)."""
        self.pos, self.next_seq = pos, next_seq
        try:
            write_atomic(self.path, json.dumps({"pos": [pos.segment, pos.offset], "next_seq": next_seq}).encode())
        except OSError as exc:
            log.warning("sink cursor not saved", extra={"file": str(self.path), "error": exc.strerror or str(exc)})


def now() -> float:
    return time.time()


__all__ = ["GENESIS", "Cursor", "Entry", "Pos", "Spool", "SpoolError", "State", "encode", "now"]
