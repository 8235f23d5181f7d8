"""Tail the exporter's journal (JSON Lines) across rotation (``<path>`` renamed to ``<path>.1``) and truncation.

A position is ``{"ino": inode, "offset": bytes}`` just after the last line consumed; it is only ever persisted by the
spool together with the records it produced (see ``audit/spool.py``), so a line is chained exactly once. This
module only splits bytes into lines: it never parses JSON.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Line:
    source: str  # the source's key (its path)
    ino: int
    offset: int  # where the line starts in that file
    end: int  # position after the line's newline
    raw: bytes  # without the newline; for an over-long line only its first bytes
    error: str | None = None  # bounded reason when the line must be quarantined (too_long, torn)

    @property
    def file(self) -> str:
        return self.source


class JournalSource:
    """One journal file. ``poll`` returns complete lines; rotation and truncation are followed transparently."""

    def __init__(self, path: Path, position: dict[str, int] | None, max_line_bytes: int = 1024 * 1024) -> None:
        self.path = Path(path)
        self.key = str(self.path)
        self.label = self.path.name
        self.max_line = max_line_bytes
        self.chunk = max(1024 * 1024, max_line_bytes + 1)
        self.fd: int | None = None
        self.ino = 0
        self.offset = 0
        self.truncations = 0
        self._skip_from: int | None = None  # inside an over-long line that started here
        self._open_initial(position)

    def _open_initial(self, position: dict[str, int] | None) -> None:
        rotated = self.path.with_name(self.path.name + ".1")
        if position:
            for candidate in (self.path, rotated):
                if self._try_open(candidate, position["ino"], position["offset"]):
                    return
            log.warning("journal position lost (rotated more than once while stopped?), reading from oldest",
                        extra={"file": self.key, "offset": position["offset"]})
        if not self._try_open(rotated, None, 0):
            self._try_open(self.path, None, 0)

    def _try_open(self, path: Path, ino: int | None, offset: int) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        if ino is not None and st.st_ino != ino:
            os.close(fd)
            return False
        self.close()
        self.fd, self.ino, self.offset = fd, st.st_ino, offset
        return True

    def rewind(self, position: dict[str, int] | None) -> None:
        """Back to a durable position (after a spool write failed): the lines after it will be read again."""
        self._skip_from = None
        self._open_initial(position)

    def position(self) -> dict[str, int]:
        return {"ino": self.ino, "offset": self.offset}

    def poll(self, max_lines: int) -> list[Line]:
        """Up to ``max_lines`` complete lines (including quarantine candidates), advancing the in-memory offset."""
        if self.fd is None and not self._try_open(self.path, None, 0):
            return []
        out: list[Line] = []
        while len(out) < max_lines:
            got = self._read_lines(max_lines - len(out))
            if got is not None:
                out.extend(got)
                continue
            switched = self._follow()
            if switched is None:
                break
            out.extend(switched)
        return out

    def _read_lines(self, budget: int) -> list[Line] | None:
        """Complete lines from the offset on; None at the end of the data (or before an incomplete line)."""
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        if size < self.offset:
            self.truncations += 1
            log.warning("journal truncated under the reader, restarting at its beginning",
                        extra={"file": self.key, "offset": self.offset, "size": size})
            self.offset, self._skip_from = 0, None
        data = os.pread(self.fd, self.chunk, self.offset)
        if not data:
            return None
        lines: list[Line] = []
        start = 0
        while len(lines) < budget:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            begin = self.offset + start
            if self._skip_from is not None:
                lines.append(Line(self.key, self.ino, self._skip_from, begin + nl - start + 1,
                                  b"", "too_long"))
                self._skip_from = None
            elif nl - start > self.max_line:
                lines.append(Line(self.key, self.ino, begin, begin + nl - start + 1, data[start:start + 4096],
                                  "too_long"))
            else:
                lines.append(Line(self.key, self.ino, begin, begin + nl - start + 1, data[start:nl]))
            start = nl + 1
        if not lines and len(data) - start > self.max_line:
            # an over-long line without its end in sight: step over it without holding it in memory
            if self._skip_from is None:
                self._skip_from = self.offset + start
            self.offset += len(data)
            return []
        self.offset += start
        return lines or None

    def _follow(self) -> list[Line] | None:
        """At the end of the open file: switch to the current ``path`` when ours was rotated away (returning the
        rotated file's torn last line, if any, for quarantine); None when there is nothing to switch to."""
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            return None
        if current == self.ino:
            return None
        assert self.fd is not None
        out = []
        tail = os.fstat(self.fd).st_size - self.offset
        if tail > 0:  # the old file ends without a newline: nothing will ever complete that line
            raw = os.pread(self.fd, min(tail, 4096), self.offset)
            out.append(Line(self.key, self.ino, self.offset, self.offset + tail, raw, "torn"))
        if not self._try_open(self.path, current, 0):
            return None
        return out

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
