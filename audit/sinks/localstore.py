"""The local store sink: a directory per chain of JSON Lines segment files plus the signed checkpoints as files.

Layout (readable with ``jq``)::

    <store>/<chain>/records-<first seq, 20 digits>.jsonl   one record per line, exactly the Elasticsearch document
    <store>/<chain>/checkpoints/<size, 20 digits>.note     C2SP signed notes
    <store>/<chain>/tile/...                               the records' Merkle tree as C2SP tiles (audit/tiles.py)

Writes are idempotent by ``seq``: on start the store reads its own last record (cutting off a line torn by a crash),
so replaying the spool after a crash never duplicates a record. The tiles follow the records: written after them,
and on start brought up to the last record from the records themselves (the tiles' own crash safety: tiles.py). What it already holds is compared, not trusted: a
replayed record must match the stored line of its seq (lines past what this shipper wrote, appended by someone
else, are found here) and an existing checkpoint note must be ours, else ``SinkConflict`` stops the sink.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson

from audit import checkpoint
from audit.canonical import CanonicalError, loads
from audit.chain import record_hash
from audit.merkle import leaf_hash
from audit.sinks import SinkConflict
from audit.tiles import TILES, TileError, TileReader, TileWriter
from audit.witness import Witnessing
from common.fsio import fsync_dir, write_atomic

SEGMENT_BYTES = 64 * 1024 * 1024


def open_regular(path: Path, mode: str = "rb") -> BinaryIO:
    """``open(path, mode)`` for a store file (segment or note), refusing anything but a regular file: a FIFO
    would block the shipper forever on open or read, a symlink may lead to ``/dev/zero`` or outside the store.
    ``FileNotFoundError`` passes through; any other file type is a ``SinkConflict`` (someone put it there)."""
    access = {"rb": os.O_RDONLY, "rb+": os.O_RDWR, "ab": os.O_WRONLY | os.O_APPEND | os.O_CREAT}[mode]
    try:
        fd = os.open(path, access | os.O_NONBLOCK | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise SinkConflict("localstore", [str(path)], "a symlink where a store file belongs") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SinkConflict("localstore", [str(path)], "not a regular file where a store file belongs")
    os.set_blocking(fd, True)
    return cast(BinaryIO, os.fdopen(fd, mode))


def segments(chain_dir: Path) -> list[Path]:
    return sorted(chain_dir.glob("records-*.jsonl"))


def chains(store: Path) -> list[str]:
    root = Path(store)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_lines(chain_dir: Path) -> Iterator[bytes]:
    """Every stored record line (without the newline), in file order."""
    for seg in segments(chain_dir):
        with open(seg, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # being appended right now (or torn by a crash; the writer cuts it on start)
                yield line[:-1]


def read_checkpoints(chain_dir: Path) -> list[str]:
    return [p.read_text() for p in sorted((chain_dir / "checkpoints").glob("*.note"))]


def _cut_torn_tail(seg: Path) -> None:
    with open_regular(seg, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                end = pos - step + nl + 1
                break
            pos -= step
        else:
            end = 0
        if end != size:
            fh.truncate(end)
            os.fsync(fh.fileno())


def _last_seq(seg: Path) -> int | None:
    with open_regular(seg) as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 4 * 1024 * 1024))
        lines = fh.read().rstrip(b"\n").split(b"\n")
    return int(json.loads(lines[-1])["chain"]["seq"]) if lines and lines[-1] else None


def _seq_of(line: bytes) -> int | None:
    try:
        seq = orjson.loads(line)["chain"]["seq"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return seq if type(seq) is int else None


def _same_record(stored: bytes, ours: bytes) -> bool:
    """The stored line is our record: the same bytes, or (rewritten in another shape) the same content and hash."""
    if stored == ours:
        return True
    try:
        value = loads(stored).value
        digest = value["chain"]["hash"]
        return digest == loads(ours).value["chain"]["hash"] and record_hash(value) == digest
    except (CanonicalError, KeyError, TypeError, AttributeError):
        return False


class LocalStore:
    """Appends sealed records and checkpoints for one chain."""

    name = "localstore"

    def __init__(self, root: Path, chain_id: str, segment_bytes: int = SEGMENT_BYTES,
                 witnesses: tuple[str, ...] = ()) -> None:
        self.dir = Path(root) / chain_id
        self.witnessing = Witnessing(self.dir, witnesses)
        self.tree_sizes: tuple[int, dict[str, int]] | None = None  # signed, {witness: cosigned}: metrics
        (self.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.dir / TILES).mkdir(exist_ok=True)  # now: later, the chain directory must not change for the tiles
        self.segment_bytes = segment_bytes
        self._fh: BinaryIO | None = None
        self._path: Path | None = None  # the segment self._fh appends to
        self.next_seq = 0
        self._stored: Iterator[tuple[int | None, bytes]] | None = None  # lines read back for a replay
        self._load_tail()
        self.tiles = self._open_tiles()

    def _open_tiles(self) -> TileWriter:
        """The tile writer, caught up with the stored records (after a crash between records and tiles). Tiles that
        cannot be read, or describe more records than there are, are rebuilt from the records."""
        try:
            tiles = TileWriter.open(self.dir)
        except (TileError, OSError):
            tiles = None
        if tiles is None or tiles.size > self.next_seq:
            for level in (self.dir / TILES).glob("[0-9]*"):
                shutil.rmtree(level, ignore_errors=True)
            tiles = TileWriter(self.dir)
        if tiles.size < self.next_seq and not self._unreadable:
            for seq, line in self._read_from(tiles.size):  # from the start of the segment holding it
                if seq is not None and seq < tiles.size:
                    continue
                if seq != tiles.size:
                    break  # not our record: verify reports it; the tree stops where the chain does
                tiles.append([leaf_hash(line)])
            tiles.flush()
        return tiles

    def _load_tail(self) -> None:
        """``next_seq`` from the last stored record (a line torn by a crash is cut off first)."""
        self.next_seq, self._unreadable = 0, ""
        segs = segments(self.dir)
        if segs:
            try:
                _cut_torn_tail(segs[-1])
                last = _last_seq(segs[-1])
                if last is None and len(segs) > 1:
                    segs[-1].unlink()
                    last = _last_seq(segs[-2])
                self.next_seq = 0 if last is None else last + 1
            except (ValueError, KeyError, TypeError, IndexError):
                self._unreadable = f"{segs[-1]}: the last line is not a record"  # not ours: never append after it
            except SinkConflict as exc:
                self._unreadable = str(exc)
        self._listing = os.stat(self.dir).st_mtime_ns  # changes when a segment file appears or goes

    def write(self, records: list[tuple[int, bytes]], checkpoints: list[dict[str, Any]]) -> None:
        """Append ``(seq, document bytes)`` not yet stored, then the checkpoints; durable when this returns. A
        failed write (disk full) is cut back off, so the file never holds a torn line in its middle."""
        if (self._fh is not None and os.fstat(self._fh.fileno()).st_size != self._fh.tell()
                or os.stat(self.dir).st_mtime_ns != self._listing):
            # someone else appended to our segment or added one: read the tail again, so that what they wrote is
            # compared below instead of being written after
            self.close()
            self._load_tail()
        if self._unreadable:
            self._load_tail()
            if self._unreadable:
                raise SinkConflict(self.name, [self._unreadable], "the store ends in a line this shipper did not write")
        try:
            self._confirm_stored([(seq, doc) for seq, doc in records if seq < self.next_seq])
            self._confirm_notes(checkpoints)
        except SinkConflict:
            self._stored = None  # a retry reads the store again
            raise
        fresh = [(seq, doc) for seq, doc in records if seq >= self.next_seq]  # a replay must not duplicate
        if fresh:
            self._stored = None
            fh = self._segment(fresh[0][0])
            committed = fh.tell()
            try:
                fh.write(b"".join(doc + b"\n" for _, doc in fresh))
                fh.flush()
                os.fsync(fh.fileno())
            except OSError:
                self._cut_back(committed)
                raise
            self.next_seq = fresh[-1][0] + 1
            if self.tiles.size == fresh[0][0]:
                self.tiles.append(leaf_hash(doc) for _, doc in fresh)
                self.tiles.flush()
            else:  # behind (a tile write failed before): catch up from the records themselves
                self.tiles = self._open_tiles()
        for cp in checkpoints:
            path = self._note_path(cp["size"])
            if not os.path.lexists(path):
                write_atomic(path, cp["note"].encode())
        self._witness([cp["note"] for cp in checkpoints])

    def _witness(self, notes: list[str]) -> None:
        """Offer the newest tree checkpoint (it carries the chain head line) to the witnesses, after its records,
        tiles and note are durable. A witness that fails does not hold up the records: the next one retries."""
        trees = []
        for text in notes:
            try:
                note = checkpoint.parse(text)
            except checkpoint.CheckpointError:
                continue  # not a checkpoint a witness could cosign (the shipper signs only parseable ones)
            if note.head is not None:
                trees.append((note.size, text))
        if not trees:
            return
        size, newest = trees[-1]
        witnessed = self.witnessing.submit(newest, TileReader(self.dir).subtree) if self.witnessing.urls else {}
        self.tree_sizes = (size, {url: witnessed.get(url, 0) for url in self.witnessing.urls})

    def _note_path(self, size: int) -> Path:
        return self.dir / "checkpoints" / f"{size:020d}.note"

    def _confirm_notes(self, checkpoints: list[dict[str, Any]]) -> None:
        """A note already there must be ours: a copied or forged note is not "already signed"."""
        bad = []
        for cp in checkpoints:
            path = self._note_path(cp["size"])
            try:
                with open_regular(path) as fh:
                    if fh.read(len(cp["note"].encode()) + 1) != cp["note"].encode():
                        bad.append(str(path))
            except FileNotFoundError:
                continue
        if bad:
            raise SinkConflict(self.name, bad, "a checkpoint note with this size exists and is not the one we signed")

    def _confirm_stored(self, replayed: list[tuple[int, bytes]]) -> None:
        """Replayed records the store claims to hold: each must be the stored line of its seq, by content. Read
        in one forward pass over the store (replays come in seq order), so memory stays flat."""
        bad = []
        for seq, doc in replayed:
            if self._stored is None:
                self._stored = self._read_from(seq)
            line = next((line for at, line in self._stored if at is None or at >= seq), None)
            if line is None or not _same_record(line, doc):
                bad.append(f"seq {seq}")
        if bad:
            raise SinkConflict(self.name, bad, "the store holds another record at this seq")

    def _read_from(self, seq: int) -> Iterator[tuple[int | None, bytes]]:
        """``(seq or None when unreadable, line)`` of the stored lines, from the segment that should hold ``seq``."""
        segs = segments(self.dir)
        start = 0
        for i, seg in enumerate(segs):
            first = seg.stem.removeprefix("records-")
            if first.isdigit() and int(first) <= seq:
                start = i
        for seg in segs[start:]:
            with open_regular(seg) as fh:
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        return
                    yield _seq_of(raw[:-1]), raw[:-1]

    def _cut_back(self, size: int) -> None:
        assert self._fh is not None and self._path is not None
        name = self._path  # not self._fh.name: a file opened by descriptor is named by its (soon closed) number
        try:
            self._fh.close()
        except OSError:
            pass  # the close flushes the very bytes that did not fit
        self._fh = None
        os.truncate(name, size)

    def _segment(self, seq: int) -> BinaryIO:
        if self._fh is not None and self._fh.tell() < self.segment_bytes:
            return self._fh
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        segs = segments(self.dir)
        if segs and segs[-1].stat().st_size < self.segment_bytes:
            path = segs[-1]
        else:
            path = self.dir / f"records-{seq:020d}.jsonl"
        self._fh = open_regular(path, "ab")  # kept open across writes, closed in close()
        self._path = path
        fsync_dir(self.dir)
        self._listing = os.stat(self.dir).st_mtime_ns  # our own new segment
        return self._fh

    def flush(self) -> None:
        """Nothing to do: ``write`` is durable and visible when it returns."""

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
