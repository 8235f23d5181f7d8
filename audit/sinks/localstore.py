"""The local store sink: a directory per chain of JSON Lines segment files plus the signed checkpoints as files.

Layout (readable with ``jq``)::

    <store>/<chain>/records-<first seq, 20 digits>.jsonl   one record per line, exactly the Elasticsearch document
    <store>/<chain>/checkpoints/<size, 20 digits>.note     C2SP signed notes

Writes are idempotent by ``seq``: on start the store reads its own last record (cutting off a line torn by a crash)
and skips anything older, so replaying the spool after a crash never duplicates a record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

SEGMENT_BYTES = 64 * 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
    with open(seg, "rb+") as fh:
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
    with open(seg, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 4 * 1024 * 1024))
        lines = fh.read().rstrip(b"\n").split(b"\n")
    return int(json.loads(lines[-1])["chain"]["seq"]) if lines and lines[-1] else None


class LocalStore:
    """Appends sealed records and checkpoints for one chain."""

    name = "localstore"

    def __init__(self, root: Path, chain_id: str, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = Path(root) / chain_id
        (self.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._fh: BinaryIO | None = None
        self.next_seq = 0
        segs = segments(self.dir)
        if segs:
            _cut_torn_tail(segs[-1])
            last = _last_seq(segs[-1])
            if last is None and len(segs) > 1:
                segs[-1].unlink()
                last = _last_seq(segs[-2])
            self.next_seq = 0 if last is None else last + 1

    def write(self, records: list[tuple[int, bytes]], checkpoints: list[dict[str, Any]]) -> None:
        """Append ``(seq, document bytes)`` not yet stored, then the checkpoints; durable when this returns. A
        failed write (disk full) is cut back off, so the file never holds a torn line in its middle."""
        fresh = [(seq, doc) for seq, doc in records if seq >= self.next_seq]  # a replay must not duplicate
        if fresh:
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
        for cp in checkpoints:
            path = self.dir / "checkpoints" / f"{cp['size']:020d}.note"
            if not path.exists():
                write_atomic(path, cp["note"].encode())

    def _cut_back(self, size: int) -> None:
        assert self._fh is not None
        name = self._fh.name
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
        self._fh = open(path, "ab")  # noqa: SIM115 - kept open across writes, closed in close()
        _fsync_dir(self.dir)
        return self._fh

    def flush(self) -> None:
        """Nothing to do: ``write`` is durable and visible when it returns."""

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh: BinaryIO | None = None
